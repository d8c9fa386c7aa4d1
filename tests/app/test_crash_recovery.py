"""SIGKILL mid-turn: every accepted message is still answered, in order, at most one
duplicate per chat per kill.

The daemon runs as a real process polling a fake Telegram, answering through a
slow OpenAI-compatible fake that echoes a marker from each message. It is killed
with SIGKILL three times while turns are in flight and restarted each time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.test_cli import env_for, free_port
from tests.fakes.llm_common import Received, Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.stores import sqlite_store
from tests.waiting import eventually, owes_nothing

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 20
MESSAGES = 10
MARKER = re.compile(r"m-\d\d-\d\d")


class EchoOpenAI(FakeOpenAI):
    """Answers each chat completion with the marker found in the user's latest message."""

    def success_body(self, reply: Scripted, request: Received) -> Any:
        messages = (request.json or {}).get("messages", [])
        latest = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        found = MARKER.findall(str(latest))
        echoed = Scripted(text=f"Bien reçu {found[-1] if found else '?'}.", delay_s=reply.delay_s)
        return super().success_body(echoed, request)


def start_daemon(
    tmp_path: Path, telegram: FakeTelegram, llm: EchoOpenAI
) -> tuple[subprocess.Popen[bytes], str]:
    """The daemon as a process, and the base URL of its HTTP server."""
    port = free_port()
    env = env_for(
        tmp_path,
        CONCIERGE_HTTP_PORT=str(port),
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_POLL_TIMEOUT_S="1",
        CONCIERGE_PROVIDERS="echo",
        ECHO_KIND="openai",
        ECHO_BASE_URL=f"{llm.url}/v1",
        ECHO_API_KEYS="k1",
        ECHO_MODEL="echo-1",
        CONCIERGE_USER_RATE_PER_MIN="600",
        CONCIERGE_USER_BURST="20",
        CONCIERGE_CONVERSATION_QUEUE="16",
        CONCIERGE_LOG_LEVEL="warning",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "concierge", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def answered(telegram: FakeTelegram) -> dict[int, list[str]]:
    by_user: dict[int, list[str]] = {}
    for user in range(USERS):
        texts = telegram.texts_to(700_000_000 + user)
        by_user[user] = [m for t in texts for m in MARKER.findall(t)]
    return by_user


def all_answered(telegram: FakeTelegram) -> bool:
    return all(len(set(m)) >= MESSAGES for m in answered(telegram).values())


def nothing_in_doubt(client: httpx.AsyncClient, base: str) -> Callable[[], Awaitable[bool]]:
    """A condition: the outbox's last look at the store found no unsent row.

    Every row the platform has taken was due when it was sent and stays due until it
    is recorded as sent, so a backlog of zero seen after the last delivery means no
    delivery is left in doubt: a restart would re-send nothing.
    """

    async def check() -> bool:
        try:
            report = (await client.get(f"{base}/health")).json()
        except httpx.TransportError:
            return False  # restarting
        (outbox,) = report["checks"]["outbox.telegram:backlog"]
        return bool(outbox["observedValue"] == 0 and outbox["inFlight"] == 0)

    return check


async def test_sigkill_mid_turn_loses_nothing_and_keeps_per_user_order(tmp_path: Path) -> None:
    telegram = FakeTelegram()
    llm = EchoOpenAI()
    llm.default = Scripted(delay_s=0.2)
    kills = 0
    async with telegram.serve(), EchoOpenAI.serve() as served:
        served.default = Scripted(delay_s=0.2)
        llm = served
        for n in range(MESSAGES):
            for user in range(USERS):
                telegram.add_update(
                    telegram.text_message(
                        user_id=700_000_000 + user,
                        text=f"Question m-{user:02d}-{n:02d} sur les horaires, svp",
                    )
                )
        process, base = start_daemon(tmp_path, telegram, llm)
        try:
            for threshold in (15, 70, 130):
                await eventually(
                    lambda: len(telegram.sent) >= threshold,  # noqa: B023
                    f"{threshold} replies before the next SIGKILL",
                    timeout_s=120,
                )
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
                kills += 1
                process, base = start_daemon(tmp_path, telegram, llm)
            await eventually(
                lambda: all_answered(telegram), "every message to be answered", timeout_s=180
            )
            async with httpx.AsyncClient(timeout=5) as client:
                await eventually(
                    nothing_in_doubt(client, base), "every delivery to be recorded as sent"
                )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        assert process.returncode == 0
    async with sqlite_store(tmp_path / "var") as store:
        assert await owes_nothing(store)(), "a restart would still send or answer something"
    replies = answered(telegram)
    total = sum(len(markers) for markers in replies.values())
    duplicates = total - USERS * MESSAGES
    for user, markers in replies.items():
        first_seen = list(dict.fromkeys(markers))
        assert first_seen == [f"m-{user:02d}-{n:02d}" for n in range(MESSAGES)], (
            f"user {user}: {markers}"
        )
        # one delivery per chat at a time: a kill leaves at most one of its replies in doubt
        assert len(markers) - MESSAGES <= kills, f"user {user}: {markers} for {kills} kills"
    print(f"{USERS * MESSAGES} messages, {kills} SIGKILLs, {duplicates} duplicate replies")
    assert duplicates <= kills * USERS, f"{duplicates} duplicate replies for {kills} kills"
