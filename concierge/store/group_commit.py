"""Group commit: concurrent writes that arrive together share one transaction.

A commit costs one round trip and one fsync whatever its size, so under load the
per-row cost falls with the batch. Callers ``submit`` an item and wait for their
own result; background flushers take whatever has queued up (at most
``max_batch``) and hand it to one ``flush`` call. Idle, a lone caller is flushed
at once: nothing waits for a batch to fill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar, cast

import attrs
import structlog
import trio

from concierge.store.background import running
from concierge.store.errors import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@attrs.define(eq=False)
class _Slot(Generic[In, Out]):
    item: In
    deadline: float
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Out | Exception | None = None
    error: Exception | None = None

    def settle(
        self, *, result: Out | Exception | None = None, error: Exception | None = None
    ) -> None:
        """The first outcome wins: a caller the watchdog released keeps its timeout."""
        if self.done.is_set():
            return
        self.result, self.error = result, error
        self.done.set()


@attrs.frozen(kw_only=True)
class GroupCommitStats:
    batches: int
    items: int
    largest_batch: int
    queued: int
    timed_out: int = 0


def _reraise(error: Exception) -> Exception:
    """A fresh exception per caller (one instance raised in many tasks tangles tracebacks)."""
    if isinstance(error, StoreUnavailable):
        return StoreUnavailable(str(error))
    if isinstance(error, StoreError):
        return StoreError(str(error))
    return StoreError(f"group commit failed: {error!r}")


def _own(result: Out | Exception) -> Out:
    """An item's own result, or the error its flush found for it alone."""
    if isinstance(result, Exception):
        raise result
    return result


class GroupCommitter(Generic[In, Out]):
    """Batch ``submit`` calls into ``flush(items) -> results`` (same length, same order).

    A failing flush raises to every caller of that batch; an exception a flush returns
    in an item's place is raised to that item's caller alone. ``run`` must be started
    in a nursery that outlives the callers; when it ends, queued callers get
    ``StoreUnavailable`` instead of waiting forever.

    Waits are bounded by one watchdog per committer rather than a cancel scope per
    caller: under a burst, a scope per write was a measurable share of the cost of
    a turn. Callers queue in a deque bounded by ``max_queued``; beyond it a write is
    refused at once (``StoreUnavailable``) instead of piling up.
    """

    def __init__(
        self,
        *,
        flush: Callable[[Sequence[In]], Awaitable[Sequence[Out | Exception]]],
        max_batch: int = 256,
        flushers: int = 1,
        wait_timeout_s: float = 30.0,
        max_queued: int = 65_536,
        name: str = "group_commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if flushers < 1:
            raise ValueError(f"flushers must be at least 1, got {flushers}")
        if max_queued < max_batch:
            raise ValueError(
                f"max_queued must be at least max_batch ({max_batch}), got {max_queued}"
            )
        if not wait_timeout_s > 0:
            raise ValueError(f"wait_timeout_s must be positive, got {wait_timeout_s!r}")
        self._flush = flush
        self._max_batch = max_batch
        self._flushers = flushers
        self._wait_timeout_s = wait_timeout_s
        self._max_queued = max_queued
        self._name = name
        self._queue: deque[_Slot[In, Out]] = deque()
        self._in_flight: list[list[_Slot[In, Out]]] = []
        self._idle_flushers = trio.lowlevel.ParkingLot()
        self._watch = trio.lowlevel.ParkingLot()
        self._batches = 0
        self._items = 0
        self._largest = 0
        self._timed_out = 0
        self._busy = 0  # flushes in flight (direct or batched)
        self._running = False

    def statistics(self) -> GroupCommitStats:
        return GroupCommitStats(
            batches=self._batches,
            items=self._items,
            largest_batch=self._largest,
            queued=len(self._queue),
            timed_out=self._timed_out,
        )

    def _too_slow(self) -> StoreUnavailable:
        return StoreUnavailable(f"{self._name}: no commit within {self._wait_timeout_s:g} s")

    async def submit(self, item: In) -> Out:
        """Commit ``item``: at once when idle, else with the batch it lands in."""
        if not self._running:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable(f"{self._name}: the store is closed")
        if self._busy == 0 and not self._queue:
            return await self._direct(item)
        if len(self._queue) >= self._max_queued:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable(f"{self._name}: {len(self._queue)} writes already queued")
        slot: _Slot[In, Out] = _Slot(item, trio.current_time() + self._wait_timeout_s)
        self._queue.append(slot)
        self._idle_flushers.unpark()
        if len(self._queue) == 1:
            self._watch.unpark()
        await slot.done.wait()
        if slot.error is not None:
            raise _reraise(slot.error) from slot.error
        return _own(cast("Out | Exception", slot.result))  # settled with a result: not None

    async def _direct(self, item: In) -> Out:
        """Nothing in flight: a lone caller commits in its own task, saving two task hops."""
        self._busy += 1
        try:
            with trio.fail_after(self._wait_timeout_s):
                (result,) = await self._flush([item])
        except trio.TooSlowError:
            self._timed_out += 1
            raise self._too_slow() from None
        finally:
            self._busy -= 1
        self._batches += 1
        self._items += 1
        self._largest = max(self._largest, 1)
        return _own(result)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flushers until cancelled; fail whatever is still queued on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog)
                for _ in range(self._flushers):
                    nursery.start_soon(self._flusher)
                self._running = True
                task_status.started()
        finally:
            self._running = False
            closed = StoreUnavailable(f"{self._name}: the store is closed")
            while self._queue:
                self._queue.popleft().settle(error=closed)

    async def _flusher(self) -> None:
        while True:
            while not self._queue:
                await self._idle_flushers.park()
            take = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(take)]
            await self._commit(batch)

    async def _watchdog(self) -> None:
        """Release callers whose write has waited ``wait_timeout_s``, queued or in flight.

        Deadlines are in arrival order, so the oldest waiter is the first of the
        queue or of the oldest batch in flight. The watchdog sleeps until then, or
        until a batch ends or a first caller queues (then it looks again): an idle
        committer holds no timer.
        """
        while True:
            oldest = self._oldest_deadline()
            if oldest is None:
                await self._watch.park()
                continue
            with trio.move_on_at(oldest):
                await self._watch.park()
            now = trio.current_time()
            while self._queue and self._queue[0].deadline <= now:
                self._expire(self._queue.popleft())
            for batch in self._in_flight:
                for slot in batch:
                    if slot.deadline <= now:
                        self._expire(slot)

    def _expire(self, slot: _Slot[In, Out]) -> None:
        if not slot.done.is_set():
            self._timed_out += 1
            slot.settle(error=self._too_slow())

    def _oldest_deadline(self) -> float | None:
        pending = [b[0].deadline for b in self._in_flight if not b[-1].done.is_set()]
        if self._queue:
            pending.append(self._queue[0].deadline)
        return min(pending, default=None)

    async def _commit(self, batch: list[_Slot[In, Out]]) -> None:
        self._busy += 1
        self._in_flight.append(batch)
        try:
            results = await self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise StoreError(
                    f"{self._name}: flush returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:
            log.info("store.group_commit_failed", batch=len(batch), error=repr(exc))
            for slot in batch:
                slot.settle(error=exc)
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.settle(result=result)
            self._batches += 1
            self._items += len(batch)
            self._largest = max(self._largest, len(batch))
        finally:
            self._busy -= 1
            self._in_flight.remove(batch)
            self._watch.unpark()
            # Cancelled mid-flush: the callers learn the store closed (the rows may or
            # may not have committed; a retry is a harmless duplicate).
            closed = StoreUnavailable(f"{self._name}: the store closed during a commit")
            for slot in batch:
                slot.settle(error=closed)


def flushing(committer: GroupCommitter[Any, Any]) -> AbstractAsyncContextManager[None]:
    """Run ``committer``'s flushers around a block; stop them when it ends."""
    return running(committer.run)
