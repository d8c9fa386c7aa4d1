"""The turn gate: turns in flight finish after it closes, and no new one starts."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import TurnGate

pytestmark = pytest.mark.anyio


async def test_closing_lets_turns_in_flight_finish_and_starts_no_new_one() -> None:
    gate = TurnGate()
    release = trio.Event()
    handled: list[int] = []
    results: list[bool] = []

    async def handle(n: int) -> None:
        await release.wait()
        handled.append(n)

    async def turn(n: int) -> None:
        results.append(await gate.turn(handle, n))

    await gate.wait_idle()  # idle from the start
    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn, 1)
        nursery.start_soon(turn, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.in_flight == 2
        gate.close()
        assert await gate.turn(handle, 3) is False
        with trio.move_on_after(0.05) as waited:
            await gate.wait_idle()
        assert waited.cancelled_caught  # still two in flight
        release.set()
        await gate.wait_idle()
    assert sorted(handled) == [1, 2]
    assert results == [True, True]
    assert gate.closed
    assert gate.in_flight == 0


async def test_a_closed_actor_sets_its_queue_aside_without_handling_it() -> None:
    send, receive = trio.open_memory_channel[int](2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(TurnGate.set_aside, receive)
        for n in range(10):  # more than the queue holds: never full
            await send.send(n)
        await send.aclose()
