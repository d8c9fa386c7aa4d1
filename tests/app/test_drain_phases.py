"""The drain's phases on their own: bounded by the timeout, the listener closed last.

The outbox is a real SQLite store; the turns, the release hook and the tree are
stand-ins that record what the drain did to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from actors import TurnGate
from concierge.app.drain import Release, drain, release_nothing
from concierge.protocol import Channel
from concierge.store import Store
from tests.stores import sqlite_store

pytestmark = pytest.mark.anyio


class Tree:
    def __init__(self) -> None:
        self.stopped_at: float | None = None

    async def stop(self) -> None:
        self.stopped_at = trio.current_time()


async def endless(_: int) -> None:
    await trio.sleep_forever()


@pytest.mark.autojump
async def test_the_listener_closes_only_after_the_notice_even_with_nothing_to_finish() -> None:
    tree, gate = Tree(), TurnGate()
    draining: list[bool] = []
    start = trio.current_time()
    complete = await drain(
        timeout_s=20,
        notice_s=3,
        set_draining=lambda: draining.append(True),
        gate=gate,
        release=release_nothing,
        outbox=None,  # type: ignore[arg-type]  # no channel: the outbox is never read
        channels=[],
        stop_tree=tree.stop,
    )
    assert complete
    assert draining == [True]
    assert gate.closed
    assert tree.stopped_at == start + 3


async def test_a_turn_outlasting_the_timeout_is_cut_and_the_tree_stopped_anyway(
    tmp_path: Path,
) -> None:
    tree, gate = Tree(), TurnGate()
    async with sqlite_store(tmp_path) as store, trio.open_nursery() as nursery:
        nursery.start_soon(gate.turn, endless, 1)
        await trio.testing.wait_all_tasks_blocked()
        complete = await _drain(store, gate, tree, timeout_s=0.2)
        assert gate.in_flight == 1  # still running: the tree's stop cancels it
        nursery.cancel_scope.cancel()
    assert not complete
    assert tree.stopped_at is not None


async def test_a_failing_release_leaves_the_rest_of_the_drain_to_run(tmp_path: Path) -> None:
    tree = Tree()

    async def release() -> None:
        raise RuntimeError("the database went away")

    async with sqlite_store(tmp_path) as store:
        complete = await _drain(store, TurnGate(), tree, timeout_s=5, release=release)
    assert not complete
    assert tree.stopped_at is not None


async def _drain(
    store: Store,
    gate: TurnGate,
    tree: Tree,
    *,
    timeout_s: float,
    release: Release = release_nothing,
) -> bool:
    return await drain(
        timeout_s=timeout_s,
        set_draining=lambda: None,
        gate=gate,
        release=release,
        outbox=store,
        channels=[Channel.TELEGRAM],
        stop_tree=tree.stop,
    )
