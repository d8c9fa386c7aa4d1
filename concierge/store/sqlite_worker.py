"""The SQLite connection's worker thread, and how calls reach it: together, in hops.

One connection, used by one worker thread at a time. Calls that queue up while the
thread is busy go to it together in one hop (each still its own transaction): under
a burst, the hops, not the SQL, were most of the cost.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from concierge.store.errors import StoreError, StoreUnavailable

T = TypeVar("T")


class _Call:
    """One caller's work on the connection, and what came of it."""

    __slots__ = ("error", "result", "taken", "task", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        self.work = work
        self.task = trio.lowlevel.current_task()
        self.taken = False
        self.result: Any = None
        self.error: Exception | None = None


def _run_calls(conn: sqlite3.Connection, calls: Sequence[_Call]) -> None:
    """In the worker thread: each call alone, its error kept for its own caller."""
    for call in calls:
        try:
            call.result = call.work(conn)
        except Exception as exc:
            call.error = exc


def _mapped(error: Exception) -> Exception:
    if isinstance(error, sqlite3.OperationalError):
        return StoreUnavailable(f"sqlite: {error}")
    if isinstance(error, sqlite3.Error):
        return StoreError(f"sqlite: {error}")
    return error


class WorkerHops:
    """Takes queued calls to the worker thread, as many per hop as have queued (up to a cap).

    One task owns the connection's thread; callers queue and wait for their own
    call. Like ``trio.to_thread.run_sync``, a caller cancelled before its hop leaves
    without running anything, and one cancelled during its hop gets the cancellation
    once the hop is back (the work did run).
    """

    def __init__(self, conn: sqlite3.Connection, *, max_calls: int) -> None:
        self._conn = conn
        self._max_calls = max_calls
        self._queue: deque[_Call] = deque()
        self._wakeup = trio.Event()
        self.running = False
        self.hops = 0
        self.calls = 0

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if not self.running:
            raise StoreUnavailable("the sqlite store is closed")
        call = _Call(work)
        self._queue.append(call)
        self._wakeup.set()

        def abort(_: object) -> trio.lowlevel.Abort:
            if call.taken:
                return trio.lowlevel.Abort.FAILED  # the hop wakes us when it is back
            self._queue.remove(call)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if call.error is not None:
            raise _mapped(call.error) from call.error
        result: T = call.result
        return result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the queue until cancelled; fail whatever is still queued on the way out."""
        self.running = True
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._queue:
                    await self._hop()
        finally:
            self.running = False
            while self._queue:
                call = self._queue.popleft()
                call.error = StoreUnavailable("the sqlite store is closed")
                trio.lowlevel.reschedule(call.task)

    async def _hop(self) -> None:
        calls = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_calls))]
        for call in calls:
            call.taken = True
        try:
            await trio.to_thread.run_sync(_run_calls, self._conn, calls)
        finally:
            self.hops += 1
            self.calls += len(calls)
            for call in calls:
                trio.lowlevel.reschedule(call.task)
