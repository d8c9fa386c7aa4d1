"""SIGTERM with ten turns in flight and webhooks still arriving: the drain finishes the work.

The daemon runs as a real process on PostgreSQL, in webhook mode, answering through
an OpenAI-compatible fake that takes 2 s per answer. After SIGTERM: ``/readyz``
fails while the turns are still in flight, every webhook is answered 200 until the
listener closes (never a 5xx), the ten turns in flight are answered before the
process exits 0, and the messages accepted during the drain are answered, once and
in order, by the next start.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.app.daemons import (
    Daemon,
    EchoOpenAI,
    Sender,
    daemons,
    fresh_database,
    marker,
    replies_to,
)
from tests.fakes.llm_common import Scripted
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

IN_FLIGHT = 10
USERS = 20
"""The first ten have a turn in flight at SIGTERM; all twenty keep writing during the drain."""


async def keep_posting(sender: Sender, url: str, daemon: Daemon, first_n: dict[int, int]) -> None:
    """One webhook after another, round the users, until the daemon has exited."""
    assert daemon.process is not None
    user = 0
    while daemon.process.poll() is None:
        n = first_n[user]
        first_n[user] += 1
        await sender.post(url, user, n)
        user = (user + 1) % USERS
        await trio.sleep(0.02)


async def readiness_fails(client: httpx.AsyncClient, daemon: Daemon) -> None:
    while True:
        answer = await client.get(f"{daemon.base}/readyz")
        if answer.status_code == 503:
            return
        await trio.sleep(0.01)


async def test_sigterm_finishes_turns_in_flight_flushes_the_outbox_and_exits_0(
    tmp_path: Path,
) -> None:
    telegram = FakeTelegram()
    async with telegram.serve(), EchoOpenAI.serve() as llm, fresh_database() as dsn:
        llm.default = Scripted(delay_s=2.0)
        with daemons(
            tmp_path,
            ["draining", "next"],
            dsn=dsn,
            telegram=telegram,
            llm=llm,
            CONCIERGE_DRAIN_TIMEOUT_S="20",
        ) as (draining, following):
            draining.start()
            async with httpx.AsyncClient(timeout=10) as client:
                await eventually(partial(draining.ready, client), "the daemon to be ready")
                sender = Sender(telegram=telegram, client=client)
                url = f"{draining.base}/webhooks/telegram"
                for user in range(IN_FLIGHT):
                    assert (await sender.post(url, user, 0)).status == 200
                await eventually(
                    lambda: len(llm.requests) >= IN_FLIGHT, "ten turns in flight at the provider"
                )
                next_n = {user: 1 if user < IN_FLIGHT else 0 for user in range(USERS)}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_posting, sender, url, draining, next_n)
                    await trio.sleep(0.1)  # webhooks are arriving
                    terminated_at = trio.current_time()
                    draining.terminate()
                    await readiness_fails(client, draining)
                    not_ready_s = trio.current_time() - terminated_at
                    answered_when_not_ready = [replies_to(telegram, u) for u in range(IN_FLIGHT)]
                    code = await draining.wait_exit(timeout_s=60)
                    exit_s = trio.current_time() - terminated_at
                answered_at_exit = {u: replies_to(telegram, u) for u in range(IN_FLIGHT)}

                statuses = [s.status for s in sender.results]
                during_drain = [s for s in sender.accepted() if s.at > terminated_at]
                refused = [i for i, s in enumerate(statuses) if s == 0]
                assert code == 0
                assert set(statuses) <= {200, 0}, statuses  # never a 5xx
                # The listener closed once, and last: nothing was accepted after a refusal.
                assert 200 not in statuses[refused[0] if refused else len(statuses) :]
                assert during_drain, "webhooks are accepted while the daemon drains"
                # Not ready while the ten turns were still in flight, before any reply...
                assert answered_when_not_ready == [[]] * IN_FLIGHT
                # ...and each of them answered (turn committed, outbox flushed) before the exit.
                assert answered_at_exit == {u: [marker(u, 0)] for u in range(IN_FLIGHT)}
                (drained,) = draining.events("daemon.drained")
                assert drained["complete"] is True
                for phase in ("turns_finished", "leases_released", "outbox_flushed"):
                    assert draining.events(f"daemon.{phase}"), phase

                # What was accepted during the drain waited in the inbox for the next start.
                llm.default = Scripted(delay_s=0.05)
                following.start()
                expected = {
                    u: [marker(u, s.n) for s in sender.accepted() if s.user == u]
                    for u in range(USERS)
                }
                await eventually(
                    lambda: all(len(replies_to(telegram, u)) >= len(expected[u]) for u in expected),
                    "every accepted message to be answered after the restart",
                    timeout_s=120,
                )
                await eventually(partial(following.ready, client), "the next start to be ready")
                following.terminate()
                assert await following.wait_exit(timeout_s=60) == 0
    assert {u: replies_to(telegram, u) for u in range(USERS)} == expected
    assert len(llm.requests) == len(sender.accepted())  # one provider call per message
    print(
        f"drain: not ready after {not_ready_s * 1000:.0f} ms, exit after {exit_s:.2f} s "
        f"(logged drain {drained['elapsed_ms']} ms), {len(during_drain)} webhooks accepted "
        f"during the drain, {statuses.count(0)} refused after the listener closed, 0 5xx"
    )
