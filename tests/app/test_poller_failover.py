"""The Telegram long poller among two replicas: one polls, the other stands by and takes
over when the leader is SIGKILLed or its lock session is terminated.

Real processes on one PostgreSQL database against the fake Bot API, each replica on a
port of its own so the fake knows who polls (and, like Telegram, answers 409 to a
second concurrent long poll).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.app.replicas import (
    MARKER,
    EchoLLM,
    fresh_database,
    ready,
    start_replica,
    stop,
)
from tests.app.test_replicas import nothing_left, sql
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 8
PER_PHASE = 3
FIRST_USER = 720_000_000
NAMES = ("replica-a", "replica-b")


@pytest.fixture
def database() -> Iterator[str]:
    yield from fresh_database()


def answered(telegram: FakeTelegram) -> Counter[str]:
    return Counter(
        m
        for u in range(USERS)
        for t in telegram.texts_to(FIRST_USER + u)
        for m in MARKER.findall(t)
    )


def add_phase(telegram: FakeTelegram, phase: int) -> list[str]:
    markers = []
    for n in range(phase * PER_PHASE, (phase + 1) * PER_PHASE):
        for user in range(USERS):
            marker = f"m-{user:02d}-{n:02d}"
            markers.append(marker)
            telegram.add_update(
                telegram.text_message(user_id=FIRST_USER + user, text=f"Question {marker} ?")
            )
    return markers


def poller_starts(tmp_path: Path, after: float) -> list[tuple[float, str]]:
    """When a replica's poller started (wall clock), after ``after``, from the replicas' logs."""
    starts = []
    for name in NAMES:
        log = tmp_path / f"{name}.log"
        for line in log.read_text().splitlines() if log.exists() else ():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "telegram.poller_started":
                at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                if at > after:
                    starts.append((at, name))
    return sorted(starts)


async def test_one_poller_at_a_time_and_a_standby_takes_over(tmp_path: Path, database: str) -> None:
    telegram = FakeTelegram()
    async with telegram.serve(binds=2), EchoLLM.serve() as llm:
        llm.max_delay_s = 0.2
        urls = dict(zip(NAMES, telegram.urls, strict=True))
        port_of = dict(zip(NAMES, telegram.ports, strict=True))

        def start(name: str) -> tuple[subprocess.Popen[str], str]:
            return start_replica(
                tmp_path,
                name,
                dsn=database,
                llm_url=llm.url,
                telegram_url=urls[name],
                token=telegram.token,
                TELEGRAM_POLL_TIMEOUT_S="1",
                CONCIERGE_LEASE_TTL_S="3",
            )

        replicas = {name: start(name) for name in NAMES}
        expected: list[str] = []
        failovers: list[float] = []
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                for process, base in replicas.values():
                    await eventually(
                        lambda p=process, b=base: ready(client, b, p), "both replicas to be ready"
                    )
                expected += add_phase(telegram, 0)
                await eventually(
                    lambda: set(expected) <= set(answered(telegram)),
                    "the first messages to be answered",
                    timeout_s=60,
                )

                def leader() -> str:
                    last = telegram.calls_to("getUpdates")[-1]
                    return next(n for n in NAMES if port_of[n] == last.port)

                # Nothing in flight: a kill now must cost nothing (no reply or call repeated).
                await eventually(lambda: nothing_left(database), "every reply recorded as sent")
                # 1. The leader dies (SIGKILL): its lock goes with its connection.
                first = leader()
                killed_at = time.time()
                os.kill(replicas[first][0].pid, signal.SIGKILL)
                replicas[first][0].wait(10)
                expected += add_phase(telegram, 1)
                await eventually(
                    lambda: bool(poller_starts(tmp_path, killed_at)),
                    "the standby to start polling",
                    timeout_s=30,
                )
                failovers.append(poller_starts(tmp_path, killed_at)[0][0] - killed_at)
                await eventually(
                    lambda: set(expected) <= set(answered(telegram)),
                    "the messages sent after the kill to be answered",
                    timeout_s=60,
                )
                # 2. The killed replica comes back as the standby; the leader's lock session is
                # terminated under it (it stays alive and must stop polling).
                replicas[first] = start(first)
                process, base = replicas[first]
                await eventually(lambda: ready(client, base, process), "the restarted replica")
                second = leader()
                assert second != first
                terminated_at = time.time()
                pid = await sql(
                    database,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    f"concierge:elect:telegram.poller:{second}",
                )
                assert pid is True
                expected += add_phase(telegram, 2)
                await eventually(
                    lambda: bool(poller_starts(tmp_path, terminated_at)),
                    "a poller to start again",
                    timeout_s=30,
                )
                failovers.append(poller_starts(tmp_path, terminated_at)[0][0] - terminated_at)
                await eventually(
                    lambda: set(expected) <= set(answered(telegram)),
                    "the messages sent after the termination to be answered",
                    timeout_s=60,
                )
                for process, _ in replicas.values():
                    assert process.poll() is None, "a replica died"
        finally:
            for process, _ in replicas.values():
                stop(process)

    offsets = [c.params["offset"] for c in telegram.calls_to("getUpdates") if "offset" in c.params]
    replies = answered(telegram)
    asked = Counter(llm.asked)
    inbox_rows = await sql(database, "SELECT count(*) FROM inbox")
    print(
        f"\npoller failover: {len(expected)} updates; failover after SIGKILL {failovers[0]:.1f} s, "
        f"after pg_terminate_backend {failovers[1]:.1f} s; overlapping long polls "
        f"{telegram.overlapping_polls}, 409 conflicts {telegram.conflicts}; inbox rows "
        f"{inbox_rows}; duplicate replies {sum(replies.values()) - len(replies)}, "
        f"duplicate LLM calls {sum(asked.values()) - len(asked)}"
    )
    assert telegram.overlapping_polls == 0
    assert telegram.conflicts == 0
    assert offsets == sorted(offsets), "a stored offset went back"
    assert inbox_rows == len(expected)  # no update taken twice
    assert set(replies) == set(expected)
    assert all(count == 1 for count in replies.values())
    assert all(count == 1 for count in asked.values())
