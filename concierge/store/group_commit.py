"""Group commit: concurrent writes that arrive together share one transaction.

A commit costs one round trip and one fsync whatever its size, so under load the
per-row cost falls with the batch. Callers ``submit`` an item and wait for their
own result; background flushers take whatever has queued up (at most
``max_batch``) and hand it to one ``flush`` call. Idle, a lone caller is flushed
at once: nothing waits for a batch to fill.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import structlog
import trio

from concierge.store.errors import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@attrs.define(eq=False)
class _Slot(Generic[In, Out]):
    item: In
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Out | None = None
    error: Exception | None = None


@attrs.frozen(kw_only=True)
class GroupCommitStats:
    batches: int
    items: int
    largest_batch: int
    queued: int


def _reraise(error: Exception) -> Exception:
    """A fresh exception per caller (one instance raised in many tasks tangles tracebacks)."""
    if isinstance(error, StoreUnavailable):
        return StoreUnavailable(str(error))
    if isinstance(error, StoreError):
        return StoreError(str(error))
    return StoreError(f"group commit failed: {error!r}")


class GroupCommitter(Generic[In, Out]):
    """Batch ``submit`` calls into ``flush(items) -> results`` (same length, same order).

    A failing flush raises to every caller of that batch. ``run`` must be started
    in a nursery that outlives the callers; when it ends, queued callers get
    ``StoreUnavailable`` instead of waiting forever.
    """

    def __init__(
        self,
        *,
        flush: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        max_batch: int = 256,
        flushers: int = 1,
        wait_timeout_s: float = 30.0,
        name: str = "group_commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if flushers < 1:
            raise ValueError(f"flushers must be at least 1, got {flushers}")
        self._flush = flush
        self._max_batch = max_batch
        self._flushers = flushers
        self._wait_timeout_s = wait_timeout_s
        self._name = name
        self._send, self._receive = trio.open_memory_channel[_Slot[In, Out]](
            max_batch * flushers * 2
        )
        self._batches = 0
        self._items = 0
        self._largest = 0
        self._busy = 0  # flushes in flight (direct or batched)
        self._running = False

    def statistics(self) -> GroupCommitStats:
        return GroupCommitStats(
            batches=self._batches,
            items=self._items,
            largest_batch=self._largest,
            queued=self._queued(),
        )

    def _queued(self) -> int:
        return int(self._receive.statistics().current_buffer_used)

    async def submit(self, item: In) -> Out:
        """Commit ``item``: at once when idle, else with the batch it lands in."""
        if self._running and self._busy == 0 and self._queued() == 0:
            # Nothing in flight: a lone caller commits directly, saving two task hops.
            self._busy += 1
            try:
                with trio.fail_after(self._wait_timeout_s):
                    (result,) = await self._flush([item])
            except trio.TooSlowError:
                raise StoreUnavailable(
                    f"{self._name}: no commit within {self._wait_timeout_s:g} s"
                ) from None
            finally:
                self._busy -= 1
            self._batches += 1
            self._items += 1
            self._largest = max(self._largest, 1)
            return result
        slot: _Slot[In, Out] = _Slot(item)
        try:
            with trio.fail_after(self._wait_timeout_s):
                await self._send.send(slot)
                await slot.done.wait()
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"{self._name}: no commit within {self._wait_timeout_s:g} s"
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreUnavailable(f"{self._name}: the store is closed") from None
        if slot.error is not None:
            raise _reraise(slot.error) from slot.error
        return slot.result  # type: ignore[return-value]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flushers until cancelled; fail whatever is still queued on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self._flushers):
                    nursery.start_soon(self._flusher)
                self._running = True
                task_status.started()
        finally:
            self._running = False
            self._send.close()
            closed = StoreUnavailable(f"{self._name}: the store is closed")
            while True:
                try:
                    slot = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                slot.error = closed
                slot.done.set()
            self._receive.close()

    async def _flusher(self) -> None:
        while True:
            try:
                first = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            await self._commit(batch)

    async def _commit(self, batch: list[_Slot[In, Out]]) -> None:
        self._busy += 1
        try:
            results = await self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise StoreError(
                    f"{self._name}: flush returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:
            log.info("store.group_commit_failed", batch=len(batch), error=repr(exc))
            for slot in batch:
                slot.error = exc
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
            self._batches += 1
            self._items += len(batch)
            self._largest = max(self._largest, len(batch))
        finally:
            self._busy -= 1
            # Cancelled mid-flush: the callers learn the store closed (the rows may or
            # may not have committed; a retry is a harmless duplicate).
            for slot in batch:
                if slot.result is None and slot.error is None:
                    slot.error = StoreUnavailable(f"{self._name}: the store closed during a commit")
                slot.done.set()


@asynccontextmanager
async def flushing(committer: GroupCommitter[Any, Any]) -> AsyncIterator[None]:
    """Run ``committer``'s flushers around a block; stop them when it ends.

    The block's own exception comes out as itself, not wrapped in the nursery's
    ``ExceptionGroup``: callers of ``open_store`` catch ``StoreError`` and friends
    as usual.
    """
    single: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            yield
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        raise single
