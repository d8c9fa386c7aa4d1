"""Several daemons as real processes on one PostgreSQL database, for the replica tests."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.app.test_cli import env_for, free_port
from tests.fakes.llm_common import Received, Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.store.conftest import ADMIN_DSN, _admin_sync, with_database

MARKER = re.compile(r"m-\d\d-\d\d")
CONCIERGE = [sys.executable, "-m", "concierge"]


def fresh_database() -> Iterator[str]:
    """A database of its own (NOTIFY channels are per database), migrated; dropped after."""
    name = f"concierge_replicas_{secrets.token_hex(4)}"
    _admin_sync(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    dsn = with_database(ADMIN_DSN, name)
    try:
        migrated = subprocess.run(
            [*CONCIERGE, "migrate"],
            env={**env_for(Path("/nonexistent")), "DATABASE_URL": dsn},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr
        yield dsn
    finally:
        _admin_sync(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class EchoLLM(FakeOpenAI):
    """Echoes the marker of the user's latest message after a random delay, and counts what a
    replica must never do: ask twice for one message, or ask for one person twice at once."""

    def __init__(self, *, max_delay_s: float = 1.0, seed: int = 15) -> None:
        super().__init__()
        self.max_delay_s = max_delay_s
        self.slow: dict[str, float] = {}
        """Markers answered after this many seconds instead of a random delay."""
        self.rng = __import__("random").Random(seed)
        self.asked: list[str] = []
        self.person_busy: Counter[str] = Counter()
        self.overlaps = 0
        self.overlapping: list[tuple[str, ...]] = []
        """For each overlap: the marker asked, and those in flight then."""
        self.in_flight_markers: set[str] = set()

    @staticmethod
    def marker(request: Received) -> str:
        messages = (request.json or {}).get("messages", [])
        latest = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        found = MARKER.findall(str(latest))
        return found[-1] if found else "?"

    def _next_reply(self, endpoint: str, key: str | None) -> Scripted | None:
        reply = super()._next_reply(endpoint, key)
        if reply is None or endpoint != self.main_endpoint:
            return reply
        return attrs.evolve(reply, delay_s=self.rng.uniform(0, self.max_delay_s))

    async def _answer(self, request: Received) -> tuple[int, bytes, dict[str, str]]:
        if request.endpoint != self.main_endpoint:
            return await super()._answer(request)
        marker = self.marker(request)
        person = marker[:4]
        self.asked.append(marker)
        self.person_busy[person] += 1
        if self.person_busy[person] > 1:
            self.overlaps += 1
            self.overlapping.append((marker, *sorted(self.in_flight_markers)))
        self.in_flight_markers.add(marker)
        try:
            if marker in self.slow:
                await trio.sleep(self.slow[marker])
            return await super()._answer(request)
        finally:
            self.person_busy[person] -= 1
            self.in_flight_markers.discard(marker)

    def success_body(self, reply: Scripted, request: Received) -> Any:
        echoed = Scripted(text=f"Bien reçu {self.marker(request)}.")
        return super().success_body(echoed, request)


def start_replica(
    tmp_path: Path, name: str, *, dsn: str, llm_url: str, telegram_url: str, token: str, **env: str
) -> tuple[subprocess.Popen[str], str]:
    """One replica as a process (its log, JSON lines, in ``<tmp>/<name>.log``) and its base URL."""
    port = free_port()
    data = tmp_path / name
    data.mkdir(exist_ok=True)
    log = (tmp_path / f"{name}.log").open("a")
    process = subprocess.Popen(
        [*CONCIERGE, "run"],
        env=env_for(
            data,
            DATABASE_URL=dsn,
            CONCIERGE_REPLICA_ID=name,
            CONCIERGE_HTTP_PORT=str(port),
            TELEGRAM_BOT_TOKEN=token,
            TELEGRAM_API_BASE_URL=telegram_url,
            CONCIERGE_PROVIDERS="echo",
            ECHO_KIND="openai",
            ECHO_BASE_URL=f"{llm_url}/v1",
            ECHO_API_KEYS="k1",
            ECHO_MODEL="echo-1",
            CONCIERGE_USER_RATE_PER_MIN="6000",
            CONCIERGE_USER_BURST="100",
            CONCIERGE_CONVERSATION_QUEUE="16",
            CONCIERGE_LOG_LEVEL="info",
            **env,
        ),
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


async def ready(client: httpx.AsyncClient, base: str, process: subprocess.Popen[str]) -> bool:
    assert process.poll() is None, f"the replica exited with {process.returncode}"
    try:
        return (await client.get(f"{base}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def metric(client: httpx.AsyncClient, base: str, name: str) -> float:
    """The value of an unlabelled counter or gauge on a replica's ``/metrics``."""
    text = (await client.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)
