"""schemathesis against the served OpenAPI document: no 5xx, every answer as documented.

The daemon runs as ``concierge run`` builds it (SQLite, a provider with two keys, a
staff chat), with two handoffs seeded so that generated requests reach the store,
not only 404s: half the handoff and user ids, and every provider and alias, are drawn
from those that exist. schemathesis runs every phase (examples, coverage, fuzzing,
stateful) and every check, with a fixed seed and a bounded number of examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from concierge.app.api import Role, issue_token
from concierge.protocol import utcnow
from tests.app.api.conftest import seed_handoff
from tests.app.test_channels_e2e import daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 50
SEED = 20261205
ENV = {
    "CONCIERGE_JWT_KEYS": "fuzz=" + "f" * 40,
    "CONCIERGE_PROVIDERS": "anthropic,offline",
    "ANTHROPIC_API_KEYS": "main=sk-ant-main,spare=sk-ant-spare",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "CONCIERGE_STAFF_CHANNEL": "telegram",
    "CONCIERGE_STAFF_CHAT_ID": "-1001234",
}


def config(handoffs: list[int], users: list[int]) -> str:
    def values(items: list[int] | list[str]) -> str:
        return ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items)

    return f"""
[dictionaries]
handoffs = {{ values = [{values(handoffs)}] }}
users = {{ values = [{values(users)}] }}
providers = {{ values = ["anthropic"] }}
aliases = {{ values = ["main", "spare"] }}
identities = {{ values = ["telegram:111", "telegram:222"] }}

[parameters]
"path.handoff_id" = {{ dictionary = "handoffs", probability = 0.5 }}
"path.user_id" = {{ dictionary = "users", probability = 0.5 }}
"path.provider" = {{ dictionary = "providers", probability = 0.8 }}
"path.alias" = {{ dictionary = "aliases", probability = 0.8 }}
"query.identity" = {{ dictionary = "identities", probability = 0.5 }}
"""


async def test_schemathesis_finds_no_server_error_and_nothing_off_the_document(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path, **ENV) as rt:
        seeded = [
            await seed_handoff(rt.store, user, name=f"User {user}") for user in ("111", "222")
        ]
        handoffs, users = [h for h, _ in seeded], [u for _, u in seeded]
        token = issue_token(
            rt.settings.api, subject="fuzz", role=Role.ADMIN, ttl_s=3600, now=utcnow()
        )
        config_file = tmp_path / "schemathesis.toml"
        config_file.write_text(config(handoffs, users))
        result = await trio.run_process(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config_file),
                "run",
                f"{rt.http_binds[0]}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--generation-database",
                "none",
                "--no-color",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    report = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, report
    assert "17 selected / 17 total" in report, report
    print(report.rsplit("SUMMARY", 1)[-1])  # the figures, in the test's captured output
