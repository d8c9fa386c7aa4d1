"""A supervisor of a fixed list of children: OTP's one_for_one, one_for_all and rest_for_one."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from ._backoff import Backoff
from ._child import (
    ChildRuntime,
    Incarnation,
    current_time_or_none,
    run_incarnation,
)
from ._errors import RestartIntensityExceeded
from ._events import ErrorContext, Reporter
from ._intensity import RestartWindow
from ._spec import ChildSpec, ChildState, Restart, Strategy, wants_restart
from ._stats import SupervisorState, SupervisorStatistics
from ._stopping import stop_child


@attrs.define(eq=False, kw_only=True)
class _Child(ChildRuntime):
    spec: ChildSpec


def _rejoins(sib: _Child) -> bool:
    """Whether a sibling comes back in a group restart: temporary children never do."""
    if sib.alive:
        return sib.restart is not Restart.TEMPORARY
    inc = sib.inc
    return sib.pending and inc is not None and wants_restart(sib.restart, inc.failure)


def check_budget(*, name: str, max_restarts: int, period_s: float, reset_after_s: float) -> None:
    """Reject settings that would make the restart budget meaningless, naming the bad one."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"supervisor name must be a non-empty string, got {name!r}")
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if not period_s > 0:
        raise ValueError(f"period_s must be > 0 seconds, got {period_s!r}")
    if not reset_after_s >= 0:
        raise ValueError(f"reset_after_s must be >= 0 seconds, got {reset_after_s!r}")


class Supervisor:
    """Starts children in order, restarts them by strategy, gives up past the intensity.

    Run it with ``await nursery.start(sup.run)``, or nest it:
    ``ChildSpec(id="inner", start=inner.run, shutdown_s=...)``; when the inner one gives
    up, its ``RestartIntensityExceeded`` is an ordinary failure of that child upstairs.

    Backoff before a one_for_one restart is slept in the child's own task, so the
    supervisor keeps serving its other children meanwhile. A group restart (one_for_all,
    rest_for_one) stops the group, sleeps the failed child's backoff and starts the group
    in order from the supervisor's task; exits of children outside the group are handled
    once it is up. Children that ended for good (temporary ones, transient ones that
    returned) stay down during a group restart.

    Each ``run()`` begins with a fresh budget and backoff (counters in ``statistics()``
    keep adding up), so a parent may restart a supervisor that gave up.
    """

    def __init__(
        self,
        *,
        name: str,
        children: Sequence[ChildSpec],
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period_s: float = 5.0,
        backoff: Backoff = Backoff(),  # noqa: B008  (frozen, so sharing the default is safe)
        reset_after_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        check_budget(
            name=name, max_restarts=max_restarts, period_s=period_s, reset_after_s=reset_after_s
        )
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be a Strategy, got {strategy!r}")
        seen: set[str] = set()
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"supervisor {name!r}: children must be ChildSpec, got {spec!r}")
            if spec.id in seen:
                raise ValueError(f"supervisor {name!r}: duplicate child id {spec.id!r}")
            seen.add(spec.id)
        self._name = name
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._period_s = period_s
        self._backoff = backoff
        self._reset_after_s = reset_after_s
        self._rng = rng if rng is not None else random.Random()
        self._children = [
            _Child(id=s.id, restart=s.restart, spec=s, window=RestartWindow(period_s=period_s))
            for s in children
        ]
        self._window = RestartWindow(period_s=period_s)
        self._report = Reporter(supervisor=name, intensity=max_restarts, period_s=period_s)
        self._state = SupervisorState.STOPPED
        self._total_restarts = 0
        self._running = False
        self._reported_started = False
        self._shutdown_requested = False
        self._nursery: trio.Nursery | None = None
        self._control = trio.CancelScope()
        self._stopped = trio.Event()
        self._changed = trio.Event()

    @property
    def name(self) -> str:
        return self._name

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, call ``task_status.started()``, then supervise them.

        Returns when :meth:`shutdown` has stopped the children, or when every child ended
        and none is to be restarted. Raises :class:`RestartIntensityExceeded` (from the
        last child error) after stopping every child in reverse start order. If cancelled,
        it stops the children the same way before the ``Cancelled`` goes on.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self._name!r} is already running")
        if self._shutdown_requested:
            task_status.started()
            return
        self._begin()
        gave_up: RestartIntensityExceeded | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with self._control:
                        await self._supervise(task_status)
                except RestartIntensityExceeded as exc:
                    gave_up = exc
                finally:
                    await self._stop_all()
        finally:
            self._running = False
            self._nursery = None
            self._state = SupervisorState.STOPPED if gave_up is None else SupervisorState.GAVE_UP
        if gave_up is not None:
            raise gave_up
        if not self._reported_started:
            # shutdown() arrived while the children were starting.
            task_status.started()

    async def shutdown(self) -> None:
        """Stop the children in reverse start order, each within its ``shutdown_s``.

        Returns once each child has ended or been abandoned; ``run()`` then returns (as
        soon as abandoned children, which trio cannot kill, are gone too). Idempotent and
        callable from any task. A supervisor that was shut down stays down: a later
        ``run()`` returns at once.
        """
        self._shutdown_requested = True
        if not self._running:
            return
        self._control.cancel(reason=f"supervisor {self._name!r} is shutting down")
        await self._stopped.wait()

    def statistics(self) -> SupervisorStatistics:
        now = current_time_or_none()
        return SupervisorStatistics(
            name=self._name,
            strategy=self._strategy,
            state=self._state,
            children=tuple(child.statistics(now) for child in self._children),
            restarts_in_window=self._window.count(now),
            total_restarts=self._total_restarts,
            max_restarts=self._max_restarts,
            period_s=self._period_s,
        )

    # -- the supervising task ---------------------------------------------------------

    def _begin(self) -> None:
        self._running = True
        self._reported_started = False
        self._state = SupervisorState.STARTING
        self._control = trio.CancelScope()
        self._stopped = trio.Event()
        self._changed = trio.Event()
        self._window.clear()
        for child in self._children:
            child.reset()

    async def _supervise(self, task_status: trio.TaskStatus[None]) -> None:
        await self._bring_up(list(self._children))
        self._state = SupervisorState.RUNNING
        self._reported_started = True
        task_status.started()
        while True:
            ended = next((c for c in self._children if c.pending), None)
            if ended is not None:
                await self._on_exit(ended)
            elif any(c.alive for c in self._children):
                await self._changed.wait()
                self._changed = trio.Event()
            else:
                return

    async def _on_exit(self, child: _Child) -> None:
        """Decide what a child's own end means: nothing, a restart, or a group restart."""
        inc = self._take(child)
        context = ErrorContext.CHILD_TERMINATED if inc.started else ErrorContext.START_ERROR
        if not wants_restart(child.restart, inc.failure):
            self._retire(child, inc, context)
            return
        delay = self._count_restart(child, inc.failure, context)
        if self._strategy is Strategy.ONE_FOR_ONE:
            self._spawn(child, delay)
            return
        start = 0 if self._strategy is Strategy.ONE_FOR_ALL else self._children.index(child)
        await self._restart_group(self._children[start:], child, delay)

    async def _restart_group(self, group: list[_Child], failed: _Child, delay: float) -> None:
        """Stop ``group`` but ``failed`` in reverse order, then start it again in order."""
        keep = [sib for sib in group if sib is failed or _rejoins(sib)]
        for sib in reversed(group):
            if sib is not failed:
                await self._stop(sib, reason=f"restarting with {failed.id!r}")
        for sib in keep:
            sib.state = ChildState.RESTARTING
            if sib is not failed:
                sib.restart_count += 1
        if delay > 0:
            await trio.sleep(delay)
        await self._bring_up(keep)

    async def _bring_up(self, members: list[_Child]) -> None:
        """Start ``members`` in order, each once the previous is ready; retry start errors."""
        i = 0
        while i < len(members):
            child = members[i]
            inc = self._spawn(child, 0.0)
            await inc.settled.wait()
            if inc.started:
                i += 1
                continue
            if inc.escaped:
                # A KeyboardInterrupt (or similar) is tearing the nursery down; the
                # cancellation reaches this task at the next checkpoint.
                await trio.sleep_forever()
            self._take(child)
            if not wants_restart(child.restart, inc.failure):
                self._retire(child, inc, ErrorContext.START_ERROR)
                i += 1
                continue
            delay = self._count_restart(child, inc.failure, ErrorContext.START_ERROR)
            if self._strategy is Strategy.ONE_FOR_ALL and i > 0:
                for sib in reversed(members[:i]):
                    await self._stop(sib, reason=f"restarting with {child.id!r}")
                members = [m for m in members[:i] if m.restart is not Restart.TEMPORARY] + members[
                    i:
                ]
                i = 0
            for sib in members[i:]:
                sib.state = ChildState.RESTARTING
            await trio.sleep(delay)

    def _take(self, child: _Child) -> Incarnation:
        """Claim the child's ended incarnation and note its failure, if any."""
        inc = child.inc
        assert inc is not None
        inc.handled = True
        if inc.failure is not None:
            child.note_failure(inc.failure, trio.current_time())
        return inc

    def _retire(self, child: _Child, inc: Incarnation, context: ErrorContext) -> None:
        child.state = ChildState.STOPPED if inc.failure is None else ChildState.FAILED
        self._report.exited(
            child,
            context=ErrorContext.NORMAL if inc.failure is None else context,
            failure=inc.failure,
        )

    def _count_restart(
        self, child: _Child, failure: Exception | None, context: ErrorContext
    ) -> float:
        """Count one restart against the intensity; give up past it, else return the backoff."""
        now = trio.current_time()
        if not self._window.try_add(now, self._max_restarts):
            restarts = self._window.count(now) + 1
            child.state = ChildState.FAILED
            self._state = SupervisorState.GAVE_UP
            self._report.gave_up(child, failure=failure, restarts_in_window=restarts)
            raise RestartIntensityExceeded(
                supervisor=self._name,
                child=child.id,
                restarts=restarts,
                max_restarts=self._max_restarts,
                period_s=self._period_s,
            ) from failure
        child.window.add(now)
        self._total_restarts += 1
        delay = child.restarting(self._backoff, self._rng, self._reset_after_s, now)
        self._report.restarted(
            child,
            context=context,
            failure=failure,
            backoff_s=delay,
            restarts_in_window=self._window.count(now),
        )
        return delay

    def _spawn(self, child: _Child, delay: float) -> Incarnation:
        assert self._nursery is not None
        inc = child.new_incarnation()
        child.state = ChildState.RESTARTING if delay > 0 else ChildState.STARTING
        self._nursery.start_soon(
            self._incarnation, child, inc, delay, name=f"{self._name}/{child.id}"
        )
        return inc

    async def _incarnation(self, child: _Child, inc: Incarnation, delay: float) -> None:
        try:
            await run_incarnation(
                inc,
                child.spec.start,
                (),
                delay=delay,
                on_starting=partial(setattr, child, "state", ChildState.STARTING),
                on_started=partial(self._on_started, child),
            )
        finally:
            if inc.stopping and inc is child.inc:
                child.state = ChildState.STOPPED
            self._changed.set()

    def _on_started(self, child: _Child, inc: Incarnation) -> None:
        child.state = ChildState.RUNNING
        child.started_at = inc.started_at
        self._report.started(child)

    # -- stopping ---------------------------------------------------------------------

    async def _stop(self, child: _Child, *, reason: str) -> None:
        """Cancel one child and wait up to its ``shutdown_s``; log how it went."""
        inc = child.inc
        if inc is None or not inc.alive:
            if child.pending:  # it ended on its own just before
                assert inc is not None
                self._take(child)
                started = ErrorContext.CHILD_TERMINATED if inc.started else ErrorContext.START_ERROR
                self._retire(child, inc, started)
            elif child.state is not ChildState.FAILED:
                child.state = ChildState.STOPPED  # e.g. stopped while waiting for its group
            return
        await stop_child(child, inc, self._report, shutdown_s=child.spec.shutdown_s, reason=reason)

    async def _stop_all(self) -> None:
        """Stop every child in reverse start order; this is cleanup, so it is shielded."""
        if self._state is not SupervisorState.GAVE_UP:
            self._state = SupervisorState.STOPPING
        reason = f"supervisor {self._name!r} is stopping"
        with trio.CancelScope(shield=True):
            try:
                for child in reversed(self._children):
                    await self._stop(child, reason=reason)
            finally:
                for child in self._children:
                    if child.inc is not None:
                        child.inc.scope.cancel(reason=reason)
                self._stopped.set()
