"""The end-to-end benchmark's smoke run: every system answers every update exactly once.

Runs ``bench/bench_turns.py --quick`` (40 updates from 10 users, a provider answering
in 50 ms) for the daemon on SQLite and both FastAPI peers, and checks only what must
hold whatever the machine's speed: each update answered once, the table printed with a
row per system. Speed is the script's business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "bench_turns.py"


def test_quick_run_answers_every_update_once_in_every_system(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backend", "sqlite", "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    systems = {s["system"]: s for s in report["systems"]}
    assert set(systems) == {"daemon (sqlite)", "sync peer", "background peer"}
    for name, outcome in systems.items():
        assert outcome["turns"] == 40, name
        assert outcome["replies_matched"] == 40, (name, done.stderr[-3000:])
        assert outcome["missing"] == 0, name
        assert outcome["duplicates"] == 0, name
        assert outcome["unmatched_replies"] == 0, name
        assert outcome["webhook_retries"] == 0, name
    assert {(r["daemon"], r["peer"]) for r in report["ratios"]} == {
        ("daemon (sqlite)", "sync peer"),
        ("daemon (sqlite)", "background peer"),
    }
    rows = [line.split("  ")[0].strip() for line in done.stdout.splitlines()]
    for name in systems:
        assert name in rows, done.stdout
    assert "ratios (daemon / peer)" in done.stdout
