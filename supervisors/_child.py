"""One child's life under a supervisor: each run of its start function, its counters, its stop."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._backoff import Backoff
from ._intensity import RestartWindow
from ._spec import ChildState, Restart
from ._stats import ChildStatistics


def current_time_or_none() -> float | None:
    """trio's clock, or None outside ``trio.run`` (statistics can be read from anywhere)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


def _shielded_scope() -> trio.CancelScope:
    return trio.CancelScope(shield=True)


@attrs.define(eq=False)
class Incarnation:
    """One call of a child's start function, from its backoff sleep to its end.

    Its cancel scope is shielded, so only the supervisor's explicit ``cancel()`` reaches
    the child: a cancelled supervisor still stops its children one by one, in reverse
    start order and each within its ``shutdown_s``, instead of all at once.
    """

    scope: trio.CancelScope = attrs.field(factory=_shielded_scope)
    settled: trio.Event = attrs.field(factory=trio.Event)
    """Set once the child called ``started()`` or ended, whichever came first."""
    done: trio.Event = attrs.field(factory=trio.Event)
    started: bool = False
    started_at: float | None = None
    value: Any = None
    """What the child passed to ``task_status.started()``."""
    failure: Exception | None = None
    escaped: bool = False
    """Ended by a BaseException (KeyboardInterrupt, ...) that is not ours to handle."""
    stopping: bool = False
    """The supervisor cancelled it: its end is a stop, never a restart."""
    handled: bool = False

    @property
    def alive(self) -> bool:
        return not self.done.is_set()


class ChildTaskStatus(trio.TaskStatus[Any]):
    """The ``task_status`` a child gets: records readiness instead of moving a task."""

    def __init__(self, incarnation: Incarnation, on_started: Callable[[Incarnation], None]) -> None:
        self._incarnation = incarnation
        self._on_started = on_started

    def started(self, value: Any = None) -> None:
        inc = self._incarnation
        if inc.started:
            raise RuntimeError("called 'started' twice on the same task status")
        inc.started = True
        inc.started_at = trio.current_time()
        inc.value = value
        self._on_started(inc)
        inc.settled.set()


async def run_incarnation(
    inc: Incarnation,
    start: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
    *,
    delay: float,
    on_starting: Callable[[], None],
    on_started: Callable[[Incarnation], None],
) -> None:
    """Sleep ``delay``, call ``start(*args, task_status=...)`` and record how it ended.

    Only ``Exception`` is recorded as a failure; ``Cancelled`` raised next to errors in a
    group, ``KeyboardInterrupt`` and other BaseExceptions propagate untouched.
    """
    status = ChildTaskStatus(inc, on_started)
    completed = False
    try:
        with inc.scope:
            if delay > 0:
                await trio.sleep(delay)
            on_starting()
            try:
                try:
                    await start(*args, task_status=status)
                except Exception as exc:  # an ExceptionGroup of Exceptions too: one failure
                    inc.failure = exc
                else:
                    if not inc.started and not inc.scope.cancel_called:
                        inc.failure = RuntimeError(
                            "child returned without calling task_status.started()"
                        )
            except* Exception as group:
                # Errors that travelled with Cancelled or KeyboardInterrupt: keep them as
                # the failure and let the BaseExceptions go on.
                inc.failure = group
        completed = True
    finally:
        inc.escaped = not completed
        inc.done.set()
        inc.settled.set()


@attrs.define(eq=False, kw_only=True)
class ChildRuntime:
    """Counters and current incarnation of one child, kept across its restarts."""

    id: str
    restart: Restart
    window: RestartWindow
    """This child's own restarts (the intensity budget for keyed children)."""
    state: ChildState = ChildState.STOPPED
    inc: Incarnation | None = None
    restart_count: int = 0
    consecutive: int = 0
    """The ``n`` of the backoff: restarts since the child last stayed up ``reset_after_s``."""
    last_failure: str | None = None
    last_failure_at: float | None = None
    started_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.inc is not None and self.inc.alive

    @property
    def pending(self) -> bool:
        """Ended on its own and nobody decided yet what happens next."""
        inc = self.inc
        return (
            inc is not None and not inc.alive and not (inc.handled or inc.stopping or inc.escaped)
        )

    def new_incarnation(self) -> Incarnation:
        self.inc = Incarnation()
        return self.inc

    def note_failure(self, failure: BaseException, now: float) -> None:
        self.last_failure = repr(failure)
        self.last_failure_at = now

    def restarting(
        self, backoff: Backoff, rng: random.Random, reset_after_s: float, now: float
    ) -> float:
        """Count one more restart; return the backoff before it (``n`` starts over after a
        long enough run)."""
        self.restart_count += 1
        inc = self.inc
        if inc is not None and inc.started_at is not None and now - inc.started_at >= reset_after_s:
            self.consecutive = 0
        self.consecutive += 1
        return backoff.delay(self.consecutive, rng)

    def reset(self) -> None:
        """Fresh budget and backoff for a new ``run()`` of the supervisor, as OTP restarts one."""
        self.window.clear()
        self.consecutive = 0
        self.inc = None
        self.state = ChildState.STOPPED

    def statistics(self, now: float | None) -> ChildStatistics:
        return ChildStatistics(
            id=self.id,
            state=self.state,
            restart_type=self.restart,
            restart_count=self.restart_count,
            restarts_in_window=self.window.count(now),
            last_failure=self.last_failure,
            last_failure_at=self.last_failure_at,
            started_at=self.started_at,
        )
