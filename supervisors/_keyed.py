"""A keyed supervisor: OTP's simple_one_for_one, one child per key, started on demand."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar, cast

import attrs
import trio

from ._backoff import Backoff
from ._child import (
    ChildRuntime,
    Incarnation,
    current_time_or_none,
    run_incarnation,
)
from ._errors import ChildAlreadyRunning, ChildStartError, MaxChildrenReached, SupervisorNotRunning
from ._events import ErrorContext, Reporter
from ._intensity import RestartWindow
from ._spec import ChildState, Restart, Strategy, wants_restart
from ._stats import SupervisorState, SupervisorStatistics
from ._stopping import stop_child
from ._supervisor import check_budget

T = TypeVar("T")


@attrs.define(eq=False, kw_only=True)
class _Entry(ChildRuntime):
    args: tuple[Any, ...]
    value: Any = None
    """The current run's started value."""
    first_value: Any = None
    ever_started: bool = False
    start_failure: Exception | None = None
    stopping: bool = False
    first: trio.Event = attrs.field(factory=trio.Event)
    """Set when the first run started, or when the child ended before that."""
    gone: trio.Event = attrs.field(factory=trio.Event)
    """Set once the key no longer hosts this child."""


class KeyedSupervisor(Generic[T]):
    """Hosts one child per key, each running ``start(key, *args, task_status=...)``.

    Every key has its own restart budget and backoff. Past ``max_restarts`` within
    ``period_s`` that key's child is given up (``supervisor.gave_up``) and removed, while
    the supervisor and every other key carry on: one conversation that keeps crashing must
    not take the others down. (OTP would terminate the whole simple_one_for_one
    supervisor instead; here escalation would punish the innocent keys.)

    A child that returns normally is removed at once, before any other task runs, unless
    its restart type is permanent. A restart calls ``start`` again with the same
    arguments, and :meth:`get` then returns the new started value; while the child waits
    out its backoff, :meth:`get` returns None but the key is still hosted (``key in sup``).
    On shutdown the children are stopped concurrently, as OTP does for dynamic children.
    """

    def __init__(
        self,
        *,
        name: str,
        start: Callable[..., Awaitable[None]],
        restart: Restart = Restart.TRANSIENT,
        max_restarts: int = 3,
        period_s: float = 5.0,
        backoff: Backoff = Backoff(),  # noqa: B008  (frozen, so sharing the default is safe)
        reset_after_s: float = 30.0,
        shutdown_s: float = 5.0,
        max_children: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        check_budget(
            name=name, max_restarts=max_restarts, period_s=period_s, reset_after_s=reset_after_s
        )
        if not callable(start):
            raise TypeError(f"supervisor {name!r}: start must be an async callable, got {start!r}")
        if not isinstance(restart, Restart):
            raise ValueError(f"supervisor {name!r}: restart must be a Restart, got {restart!r}")
        if not shutdown_s > 0:
            raise ValueError(
                f"supervisor {name!r}: shutdown_s must be > 0 seconds, got {shutdown_s!r}"
            )
        if max_children is not None and (not isinstance(max_children, int) or max_children < 1):
            raise ValueError(
                f"supervisor {name!r}: max_children must be None or an int >= 1, got {max_children!r}"
            )
        self._name = name
        self._start = start
        self._restart = restart
        self._max_restarts = max_restarts
        self._period_s = period_s
        self._backoff = backoff
        self._reset_after_s = reset_after_s
        self._shutdown_s = shutdown_s
        self._max_children = max_children
        self._rng = rng if rng is not None else random.Random()
        self._report = Reporter(
            supervisor=name, intensity=max_restarts, period_s=period_s, routine_at_debug=True
        )
        self._entries: dict[str, _Entry] = {}
        self._state = SupervisorState.STOPPED
        self._total_restarts = 0
        self._running = False
        self._shutdown_requested = False
        self._nursery: trio.Nursery | None = None
        self._control = trio.CancelScope()
        self._stopped = trio.Event()

    @property
    def name(self) -> str:
        return self._name

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> T | None:
        """The started value of the key's child while it runs, else None."""
        entry = self._entries.get(key)
        if entry is None or entry.state is not ChildState.RUNNING:
            return None
        return cast("T", entry.value)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host children until :meth:`shutdown` (or cancellation) has stopped them all."""
        if self._running:
            raise RuntimeError(f"supervisor {self._name!r} is already running")
        if self._shutdown_requested:
            task_status.started()
            return
        self._running = True
        self._state = SupervisorState.RUNNING
        self._control = trio.CancelScope()
        self._stopped = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    task_status.started()
                    with self._control:
                        await trio.sleep_forever()
                finally:
                    await self._stop_all()
        finally:
            self._running = False
            self._nursery = None
            self._state = SupervisorState.STOPPED

    async def start_child(self, key: str, *args: Any) -> T:
        """Start ``start(key, *args, task_status=...)``; return what it passed to ``started()``.

        Raises :class:`ChildAlreadyRunning` (a ``KeyError``) if the key is still hosted,
        :class:`MaxChildrenReached` when ``max_children`` are hosted,
        :class:`SupervisorNotRunning` outside ``run()``, and :class:`ChildStartError` (from
        the child's error) if the child ended before calling ``started()``; a failed
        first start is not retried, the caller decides.
        """
        entry = self._host(key, args)
        await entry.first.wait()
        if not entry.ever_started:
            reason = "it was stopped first" if entry.start_failure is None else "it failed to start"
            raise ChildStartError(
                supervisor=self._name, child=key, reason=reason
            ) from entry.start_failure
        return cast("T", entry.first_value)

    def start_child_soon(self, key: str, *args: Any) -> None:
        """Start the key's child without waiting for it to call ``started()``.

        For a caller that must not wait on any one child (a router): it raises the
        same refusals as :meth:`start_child` at once; the child is hosted from now on
        (``key in sup``) and :meth:`get` returns its value once it has started. A first
        start that fails is reported (``supervisor.child_exited``) and the key removed.
        """
        self._host(key, args)

    def _host(self, key: str, args: tuple[Any, ...]) -> _Entry:
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"supervisor {self._name!r}: key must be a non-empty string, got {key!r}"
            )
        if self._nursery is None or self._state is not SupervisorState.RUNNING:
            raise SupervisorNotRunning(supervisor=self._name, state=str(self._state))
        if key in self._entries:
            raise ChildAlreadyRunning(supervisor=self._name, child=key)
        if self._max_children is not None and len(self._entries) >= self._max_children:
            raise MaxChildrenReached(
                supervisor=self._name, child=key, max_children=self._max_children
            )
        entry = _Entry(
            id=key, restart=self._restart, window=RestartWindow(period_s=self._period_s), args=args
        )
        self._entries[key] = entry
        self._nursery.start_soon(self._slot, entry, name=f"{self._name}/{key}")
        return entry

    async def stop_child(self, key: str) -> None:
        """Stop the key's child within ``shutdown_s``; nothing to do for a key not hosted."""
        entry = self._entries.get(key)
        if entry is not None:
            await self._stop_entry(entry, reason=f"child {key!r} stopped on request")

    async def shutdown(self) -> None:
        """Stop every child concurrently, each within ``shutdown_s``; then ``run()`` returns.

        Idempotent and callable from any task; a supervisor shut down stays down.
        """
        self._shutdown_requested = True
        if not self._running:
            return
        self._control.cancel(reason=f"supervisor {self._name!r} is shutting down")
        await self._stopped.wait()

    def statistics(self) -> SupervisorStatistics:
        """Hosted children in start order; the budget (``max_restarts``) is per key."""
        now = current_time_or_none()
        children = tuple(entry.statistics(now) for entry in self._entries.values())
        return SupervisorStatistics(
            name=self._name,
            strategy=Strategy.ONE_FOR_ONE,
            state=self._state,
            children=children,
            restarts_in_window=sum(child.restarts_in_window for child in children),
            total_restarts=self._total_restarts,
            max_restarts=self._max_restarts,
            period_s=self._period_s,
        )

    # -- one task per key -------------------------------------------------------------

    async def _slot(self, entry: _Entry) -> None:
        """Run the key's child, restarting it in place until it is done for good."""
        delay: float | None = 0.0
        try:
            while delay is not None and not entry.stopping:
                inc = entry.new_incarnation()
                entry.state = ChildState.RESTARTING if delay > 0 else ChildState.STARTING
                await run_incarnation(
                    inc,
                    self._start,
                    (entry.id, *entry.args),
                    delay=delay,
                    on_starting=partial(setattr, entry, "state", ChildState.STARTING),
                    on_started=partial(self._on_started, entry),
                )
                entry.value = None
                if inc.stopping:
                    return
                delay = self._after_exit(entry, inc)
        finally:
            # No checkpoint between the child's return and here: once it has returned,
            # a new start_child for the key cannot be refused as already running.
            if self._entries.get(entry.id) is entry:
                del self._entries[entry.id]
            entry.first.set()
            entry.gone.set()

    def _on_started(self, entry: _Entry, inc: Incarnation) -> None:
        entry.state = ChildState.RUNNING
        entry.started_at = inc.started_at
        entry.value = inc.value
        self._report.started(entry)
        if not entry.ever_started:
            entry.ever_started = True
            entry.first_value = inc.value
            entry.first.set()

    def _after_exit(self, entry: _Entry, inc: Incarnation) -> float | None:
        """The backoff before the next run, or None when the key's child is done."""
        now = trio.current_time()
        failure = inc.failure
        if failure is not None:
            entry.note_failure(failure, now)
        context = ErrorContext.CHILD_TERMINATED if inc.started else ErrorContext.START_ERROR
        if not entry.ever_started:
            entry.start_failure = failure
            entry.state = ChildState.FAILED
            self._report.exited(entry, context=context, failure=failure)
            return None
        if not wants_restart(entry.restart, failure):
            entry.state = ChildState.STOPPED if failure is None else ChildState.FAILED
            self._report.exited(
                entry, context=ErrorContext.NORMAL if failure is None else context, failure=failure
            )
            return None
        if not entry.window.try_add(now, self._max_restarts):
            entry.state = ChildState.FAILED
            restarts = entry.window.count(now) + 1
            self._report.gave_up(entry, failure=failure, restarts_in_window=restarts)
            return None
        self._total_restarts += 1
        delay = entry.restarting(self._backoff, self._rng, self._reset_after_s, now)
        self._report.restarted(
            entry,
            context=context,
            failure=failure,
            backoff_s=delay,
            restarts_in_window=entry.window.count(now),
        )
        return delay

    # -- stopping ---------------------------------------------------------------------

    async def _stop_entry(self, entry: _Entry, *, reason: str) -> None:
        inc = entry.inc
        if entry.stopping or inc is None or not inc.alive:
            # Someone else is stopping it, or its task has not run yet: just wait.
            entry.stopping = True
            with trio.move_on_after(self._shutdown_s):
                await entry.gone.wait()
            return
        entry.stopping = True
        await stop_child(
            entry, inc, self._report, shutdown_s=self._shutdown_s, reason=reason, gone=entry.gone
        )

    async def _stop_all(self) -> None:
        """Stop every child concurrently; this is cleanup, so it is shielded."""
        self._state = SupervisorState.STOPPING
        reason = f"supervisor {self._name!r} is stopping"
        with trio.CancelScope(shield=True):
            try:
                async with trio.open_nursery() as nursery:
                    for entry in list(self._entries.values()):
                        nursery.start_soon(partial(self._stop_entry, entry, reason=reason))
            finally:
                for entry in self._entries.values():
                    entry.stopping = True
                    if entry.inc is not None:
                        entry.inc.scope.cancel(reason=reason)
                self._stopped.set()
