"""SQLite mode is one process: a second daemon on the same data directory refuses to start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.test_cli import CONCIERGE, env_for, free_port, ready, run_cli
from tests.waiting import eventually


def start_daemon(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [*CONCIERGE, "run"],
        env=env_for(tmp_path, CONCIERGE_HTTP_PORT=str(port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
def first_daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process, base = start_daemon(tmp_path)
    try:
        yield process, base
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.anyio
async def test_a_second_daemon_on_the_same_data_directory_refuses_to_start(
    tmp_path: Path, first_daemon: tuple[subprocess.Popen[str], str]
) -> None:
    first, base = first_daemon
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await eventually(ready(client, first), "the first daemon to be ready", step_s=0.05)
    second = run_cli(tmp_path, "run", CONCIERGE_HTTP_PORT=str(free_port()))
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert str((tmp_path / "var").resolve()) in lines[0]
    assert "another daemon" in lines[0]
    assert first.poll() is None  # the first one carries on


@pytest.mark.anyio
async def test_the_lock_goes_with_a_killed_daemon(
    tmp_path: Path, first_daemon: tuple[subprocess.Popen[str], str]
) -> None:
    first, base = first_daemon
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await eventually(ready(client, first), "the first daemon to be ready", step_s=0.05)
    first.kill()
    first.wait(10)
    second, second_base = start_daemon(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=second_base, timeout=5) as client:
            await eventually(ready(client, second), "the second daemon to be ready", step_s=0.05)
    finally:
        second.kill()
        second.wait(10)
