"""Admission: turns in flight bounded by the loop's lag and the outbox; the rest waits in the inbox."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from actors.inbox_replay import drain_deferred
from concierge.domain import Admission, Ingest
from concierge.protocol import Channel, InboundMessage, RouterMsg, new_correlation_id
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


def message(n: int) -> InboundMessage:
    return InboundMessage(
        correlation_id=new_correlation_id(),
        channel=Channel.CONSOLE,
        user_key=f"console:u{n}",
        chat_id=f"u{n}",
        external_id=f"m{n}",
        text=f"question {n}",
        received_at=datetime.now(UTC),
    )


async def test_a_new_gate_admits_its_floor_and_grows_while_the_loop_keeps_up() -> None:
    gate = Admission(max_turns=20, min_turns=4)
    assert [gate.admit(i) for i in range(5)] == [True, True, True, True, False]
    assert gate.refused == 1
    gate.observe_lag(0.001)
    assert gate.room() == 1  # grown by one while rows wait: no more than it needs
    for i in range(4, 100):  # rows keep coming: the limit grows to the ceiling
        gate.admit(i)
        gate.observe_lag(0.001)
    assert (gate.limit, gate.in_flight) == (20, 20)
    assert not gate.admit(3)  # already in flight


async def test_lag_above_target_shrinks_the_limit_to_the_floor() -> None:
    gate = Admission(max_turns=100, min_turns=8, lag_target_s=0.02)
    for i in range(100):
        gate.observe_lag(0.0)
        gate.admit(i)
    assert gate.limit == 100
    for _ in range(100):
        gate.observe_lag(0.05)
    assert gate.limit == 8
    assert gate.room() == 0
    for i in range(100):
        gate.release(i)
    assert gate.room() == 8


async def test_a_full_outbox_closes_the_gate() -> None:
    backlog = 0
    gate = Admission(max_turns=10, outbox_limit=200, outbox_backlog=lambda: backlog)
    assert gate.room() > 0
    backlog = 200
    assert gate.room() == 0
    assert not gate.admit(1)


@pytest.mark.autojump
async def test_a_row_never_released_stops_counting_after_expire_s() -> None:
    gate = Admission(max_turns=1, min_turns=1, expire_s=60)
    assert gate.admit(1)
    assert not gate.admit(2)
    await trio.sleep(61)
    assert gate.admit(2)
    assert not gate.holds(1)


async def test_a_saturated_daemon_leaves_rows_in_the_inbox_and_drains_them_as_turns_end(
    tmp_path: Path,
) -> None:
    gate = Admission(max_turns=2, min_turns=2)
    router_send, router_receive = trio.open_memory_channel[RouterMsg](64)
    async with sqlite_store(tmp_path) as store:
        ingest = Ingest(store=store, router=router_send, admission=gate)
        for n in range(5):
            await ingest.accept(message(n))
        first = [router_receive.receive_nowait() for _ in range(2)]
        with pytest.raises(trio.WouldBlock):
            router_receive.receive_nowait()  # three rows wait in the inbox, not in memory
        assert gate.deferred == 3
        assert len(await store.pending_inbox()) == 5
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: drain_deferred(store=store, router=router_send, admission=gate)
            )
            handed = [msg.external_id for msg in first]
            for msg in first:  # their turns end: room for the next rows, oldest first
                await store.mark_processed(msg.inbox_id)
                gate.release(msg.inbox_id)
            while len(handed) < 5:
                with trio.fail_after(10):
                    msg = await router_receive.receive()
                handed.append(msg.external_id)
                await store.mark_processed(msg.inbox_id)
                gate.release(msg.inbox_id)
            await eventually(lambda: gate.deferred == 0, "the drain to find nothing waiting")
            nursery.cancel_scope.cancel()
        assert handed == [f"m{n}" for n in range(5)]
        assert gate.in_flight == 0
