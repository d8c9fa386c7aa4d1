"""Group commit on its own: batching, bounds, per-caller results and failures."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pytest
import trio
import trio.testing

from concierge.store import StoreUnavailable
from concierge.store.group_commit import GroupCommitter, flushing

pytestmark = pytest.mark.anyio


class Recorder:
    """A flush that doubles its inputs and remembers the batches it saw."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.release = trio.Event()

    async def flush(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise StoreUnavailable("server went away")
        return [i * 2 for i in items]


async def record(committer: GroupCommitter[int, int], outcomes: dict[int, object], n: int) -> None:
    """Submit ``n``; keep its result, or the exception it raised."""
    try:
        outcomes[n] = await committer.submit(n)
    except Exception as exc:
        outcomes[n] = exc


async def test_callers_arriving_during_a_flush_share_the_next_batch_each_with_its_result() -> None:
    recorder = Recorder()
    committer = GroupCommitter(flush=recorder.flush, max_batch=4)
    results: dict[int, int] = {}

    async def call(n: int) -> None:
        results[n] = await committer.submit(n)

    async with flushing(committer), trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, 10):
            nursery.start_soon(call, n)
        await trio.testing.wait_all_tasks_blocked()
        recorder.release.set()
    assert results == {n: n * 2 for n in range(10)}
    assert recorder.batches[0] == [0]
    assert [len(b) for b in recorder.batches[1:]] == [4, 4, 1]
    assert sorted(n for b in recorder.batches for n in b) == list(range(10))
    assert committer.statistics().largest_batch == 4


async def test_a_failed_batch_raises_to_every_caller_in_it_and_only_them() -> None:
    recorder = Recorder(fail_on=3)
    committer = GroupCommitter(flush=recorder.flush, max_batch=8)
    outcomes: dict[int, object] = {}

    call = partial(record, committer, outcomes)

    async with flushing(committer), trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)
        await trio.testing.wait_all_tasks_blocked()
        for n in (1, 2, 3):
            nursery.start_soon(call, n)
        await trio.testing.wait_all_tasks_blocked()
        recorder.release.set()
    assert outcomes[0] == 0
    errors = [outcomes[n] for n in (1, 2, 3)]
    assert all(isinstance(e, StoreUnavailable) for e in errors)
    assert len({id(e) for e in errors}) == 3  # one fresh exception per caller


async def test_callers_queued_when_the_committer_stops_get_store_unavailable() -> None:
    recorder = Recorder()
    committer = GroupCommitter(flush=recorder.flush, max_batch=2)
    outcomes: dict[int, object] = {}

    call = partial(record, committer, outcomes)

    async with trio.open_nursery() as nursery:
        async with flushing(committer):
            for n in range(5):
                nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert len(outcomes) == 4
        assert all(isinstance(o, StoreUnavailable) for o in outcomes.values())
        (direct,) = set(range(5)) - set(outcomes)
        recorder.release.set()  # the idle-time caller commits directly, in its own task
    assert outcomes[direct] == direct * 2
    with pytest.raises(StoreUnavailable, match="closed"):
        await committer.submit(9)


async def test_an_error_in_the_block_comes_out_unwrapped() -> None:
    committer = GroupCommitter(flush=Recorder().flush)
    with pytest.raises(KeyError):
        async with flushing(committer):
            raise KeyError("not a group")


def test_bad_bounds_are_refused_with_the_name_of_the_bound() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(flush=Recorder().flush, max_batch=0)
    with pytest.raises(ValueError, match="flushers"):
        GroupCommitter(flush=Recorder().flush, flushers=0)


@pytest.mark.autojump
async def test_a_stuck_flush_releases_its_callers_and_the_queued_ones_in_time() -> None:
    recorder = Recorder()  # never released: a flush that hangs (a dead disk, a hung server)
    committer = GroupCommitter(flush=recorder.flush, max_batch=2, wait_timeout_s=5.0)
    outcomes: dict[int, object] = {}
    released_at: dict[int, float] = {}

    async def call(n: int) -> None:
        await record(committer, outcomes, n)
        released_at[n] = trio.current_time()

    start = trio.current_time()
    async with flushing(committer), trio.open_nursery() as nursery:
        for n in range(5):  # 0 commits directly; 1-2 go in flight; 3-4 stay queued
            nursery.start_soon(call, n)
        await trio.testing.wait_all_tasks_blocked()
        assert committer.statistics().queued == 2
    assert set(outcomes) == set(range(5))
    assert all(
        isinstance(o, StoreUnavailable) and "within 5 s" in str(o) for o in outcomes.values()
    )
    assert all(t - start == pytest.approx(5.0) for t in released_at.values())
    stats = committer.statistics()
    assert (stats.timed_out, stats.queued, stats.batches) == (5, 0, 0)


@pytest.mark.autojump
async def test_the_watchdog_holds_no_timer_once_every_caller_has_its_result() -> None:
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(flush=recorder.flush, max_batch=4, wait_timeout_s=30.0)

    async with flushing(committer), trio.open_nursery() as nursery:
        for n in range(9):
            nursery.start_soon(committer.submit, n)
        await trio.testing.wait_all_tasks_blocked()
        assert committer.statistics().items == 9
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")


async def test_writes_beyond_the_queue_bound_are_refused_at_once_with_the_bound() -> None:
    recorder = Recorder()
    committer = GroupCommitter(flush=recorder.flush, max_batch=1, max_queued=2)
    outcomes: dict[int, object] = {}

    call = partial(record, committer, outcomes)

    async with flushing(committer), trio.open_nursery() as nursery:
        for n in range(5):  # 0 direct, 1 in flight, 2-3 queued, 4 over the bound
            nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
        refused = outcomes.pop(4)
        assert isinstance(refused, StoreUnavailable)
        assert "2 writes already queued" in str(refused)
        recorder.release.set()
    assert outcomes == {n: n * 2 for n in range(4)}


def test_a_queue_bound_below_the_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        GroupCommitter(flush=Recorder().flush, max_batch=8, max_queued=4)


async def test_an_exception_in_an_items_place_is_raised_to_that_caller_alone() -> None:
    async def flush(items: Sequence[int]) -> list[int | Exception]:
        await trio.lowlevel.checkpoint()
        return [ValueError(f"bad {i}") if i == 3 else i * 2 for i in items]

    committer = GroupCommitter(flush=flush, max_batch=8)
    outcomes: dict[int, object] = {}

    call = partial(record, committer, outcomes)

    async with flushing(committer), trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(call, n)
    failed = outcomes.pop(3)
    assert isinstance(failed, ValueError)
    assert str(failed) == "bad 3"
    assert outcomes == {n: n * 2 for n in (0, 1, 2, 4, 5)}
    assert committer.statistics().largest_batch > 1
