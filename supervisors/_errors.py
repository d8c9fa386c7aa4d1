"""Supervision errors.

SupervisorError
├── RestartIntensityExceeded   too many restarts in the window: the supervisor gave up
├── ChildStartError            a keyed child failed before calling ``task_status.started()``
├── ChildAlreadyRunning        ``start_child`` for a key that is still hosted (also a KeyError)
├── MaxChildrenReached         ``start_child`` for a new key while ``max_children`` are hosted
└── SupervisorNotRunning       ``start_child`` before ``run()`` started or after shutdown began
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class of every supervision error."""


class RestartIntensityExceeded(SupervisorError):
    """More than ``max_restarts`` restarts within ``period_s``: the supervisor gave up.

    Raised ``from`` the last child error, after every child was stopped, so the parent
    (a supervisor one level up, or the process) sees an ordinary child failure.
    """

    def __init__(
        self,
        *,
        supervisor: str,
        child: str,
        restarts: int,
        max_restarts: int | None = None,
        period_s: float | None = None,
    ) -> None:
        limit = "" if max_restarts is None else f" (at most {max_restarts}"
        if limit and period_s is not None:
            limit += f" in {period_s:g}s"
        limit += ")" if limit else ""
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} needed restart "
            f"number {restarts} within the window{limit}"
        )
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
        self.max_restarts = max_restarts
        self.period_s = period_s


class ChildStartError(SupervisorError):
    """A keyed child ended before it called ``task_status.started()``; ``__cause__`` says why."""

    def __init__(self, *, supervisor: str, child: str, reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r} could not start child {child!r}: {reason}")
        self.supervisor = supervisor
        self.child = child


class ChildAlreadyRunning(SupervisorError, KeyError):
    """``start_child`` was called for a key whose child is still hosted."""

    def __init__(self, *, supervisor: str, child: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} already hosts child {child!r}; "
            "use get() for its value or stop_child() first"
        )
        self.supervisor = supervisor
        self.child = child

    def __str__(self) -> str:
        # KeyError would repr() the message; this one is meant for people.
        return str(self.args[0])


class MaxChildrenReached(SupervisorError):
    """``start_child`` for a new key while the supervisor already hosts ``max_children``."""

    def __init__(self, *, supervisor: str, child: str, max_children: int) -> None:
        super().__init__(
            f"supervisor {supervisor!r} refused child {child!r}: "
            f"it already hosts max_children={max_children}"
        )
        self.supervisor = supervisor
        self.child = child
        self.max_children = max_children


class SupervisorNotRunning(SupervisorError, RuntimeError):
    """A child was asked for while the supervisor is not hosting children."""

    def __init__(self, *, supervisor: str, state: str) -> None:
        super().__init__(f"supervisor {supervisor!r} is {state}, it cannot start children")
        self.supervisor = supervisor
