"""A rolling restart under steady webhook load: nothing refused, lost, repeated or reordered.

Two daemon processes on one PostgreSQL database behind the shipped Caddyfile (the
real Caddy, both upstreams, /readyz health checks). Users write steadily through
Caddy while ``scripts/rolling-restart --local`` restarts the replicas one at a time;
the test plays the process supervisor (it starts a replica again when it exits, as
systemd or compose's restart policy would).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.app.daemons import (
    ROOT,
    SECRET,
    Daemon,
    EchoOpenAI,
    Sender,
    caddy_in_front,
    daemons,
    fresh_database,
    marker,
    replies_to,
)
from tests.fakes.llm_common import Scripted
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 12
PER_USER_INTERVAL_S = 1.0
"""Each user writes about once a second: Telegram's pace for replies to one chat."""


class RepliesRepeatedOrReordered(AssertionError):
    """Some user got a reply twice, or out of the order of their messages."""


async def supervise(daemon: Daemon, exits: list[int], stop: trio.Event) -> None:
    """Start the daemon again whenever it exits, until ``stop``."""
    while not stop.is_set():
        assert daemon.process is not None
        code = daemon.process.poll()
        if code is not None:
            exits.append(code)
            daemon.start()
        await trio.sleep(0.05)


async def steady_load(
    sender: Sender, url: str, user: int, stop: trio.Event, writing: set[int]
) -> None:
    """One user's messages until ``stop``; ``writing`` holds the user until their last answer."""
    writing.add(user)
    try:
        n = 0
        while not stop.is_set():
            await sender.post(url, user, n)
            n += 1
            await trio.sleep(PER_USER_INTERVAL_S)
    finally:
        writing.discard(user)


async def routed(client: httpx.AsyncClient, url: str) -> bool:
    """A forged webhook reaches a daemon (its 403) through Caddy; it leaves no message."""
    try:
        answer = await client.post(
            url, json={"update_id": 1}, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}
        )
    except httpx.TransportError:
        return False
    return answer.status_code == 403


async def test_a_rolling_restart_under_load_fails_loses_repeats_and_reorders_nothing(
    tmp_path: Path,
) -> None:
    telegram = FakeTelegram()
    async with telegram.serve(), EchoOpenAI.serve() as llm, fresh_database() as dsn:
        llm.default = Scripted(delay_s=0.2)
        with daemons(
            tmp_path,
            ["replica-a", "replica-b"],
            dsn=dsn,
            telegram=telegram,
            llm=llm,
            CONCIERGE_DRAIN_NOTICE_S="2",  # above Caddy's health_interval (1 s)
        ) as replicas:
            for replica in replicas:
                replica.start()
            upstreams = [f"127.0.0.1:{r.port}" for r in replicas]
            async with (
                caddy_in_front(tmp_path, upstreams) as edge,
                edge.client() as client,
                httpx.AsyncClient(timeout=5) as probe,
            ):
                for replica in replicas:
                    await eventually(partial(replica.ready, probe), f"{replica.name} to be ready")
                url = f"{edge.base}/webhooks/telegram"
                await eventually(partial(routed, client, url), "Caddy to route webhooks")
                sender = Sender(telegram=telegram, client=client)
                exits: dict[str, list[int]] = {r.name: [] for r in replicas}
                stop_load, stop_supervising = trio.Event(), trio.Event()
                writing: set[int] = set()
                async with trio.open_nursery() as nursery:
                    for replica in replicas:
                        nursery.start_soon(
                            supervise, replica, exits[replica.name], stop_supervising
                        )
                    for user in range(USERS):
                        nursery.start_soon(steady_load, sender, url, user, stop_load, writing)
                    await eventually(lambda: len(sender.results) >= 3 * USERS, "a steady load")
                    rolled_at = trio.current_time()
                    rolled = await trio.run_process(
                        [
                            sys.executable,
                            str(ROOT / "scripts" / "rolling-restart"),
                            "--local",
                            *(f"{r.name}={r.base}" for r in replicas),
                            "--pid-dir",
                            str(tmp_path / "pids"),
                            "--poll",
                            "0.1",
                            "--timeout",
                            "60",
                        ],
                        capture_stdout=True,
                        check=False,
                    )
                    rolling_s = trio.current_time() - rolled_at
                    after = len(sender.results)
                    await eventually(
                        lambda: len(sender.results) >= after + 2 * USERS, "load after the restart"
                    )
                    stop_load.set()
                    # a webhook still in flight is answered too: count it once it returns
                    await eventually(lambda: not writing, "the last webhooks to be answered")
                    expected = {
                        u: [marker(u, s.n) for s in sender.accepted() if s.user == u]
                        for u in range(USERS)
                    }
                    await eventually(
                        lambda: all(
                            set(expected[u]) <= set(replies_to(telegram, u)) for u in expected
                        ),
                        "every accepted message to be answered",
                        timeout_s=120,
                    )
                    stop_supervising.set()
            print(rolled.stdout.decode())
            assert rolled.returncode == 0
            assert exits == {r.name: [0] for r in replicas}  # each drained once, exit 0
    failed = [s for s in sender.results if s.status != 200]
    replies = {u: replies_to(telegram, u) for u in range(USERS)}
    lost = sum(len(set(expected[u]) - set(replies[u])) for u in expected)
    duplicates = sum(len(replies[u]) - len(set(replies[u])) for u in expected)
    # users whose replies, each counted once (its first copy), are not in message order
    reordered = sum(list(dict.fromkeys(replies[u])) != expected[u] for u in expected)
    print(
        f"rolling restart: {rolling_s:.1f} s, {len(sender.results)} webhooks, "
        f"{len(failed)} failed, {lost} lost, {duplicates} duplicate replies, "
        f"{reordered} of {USERS} users answered out of order"
    )
    assert failed == [], f"webhooks failed with {sorted({s.status for s in failed})}"
    assert lost == 0
    if replies != expected:
        raise RepliesRepeatedOrReordered(
            f"{duplicates} duplicate replies; first user differing: "
            + next(
                f"{u}: {replies[u]} != {expected[u]}" for u in expected if replies[u] != expected[u]
            )
        )
