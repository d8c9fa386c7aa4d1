"""Frozen snapshots a supervisor returns from ``statistics()`` (for /health and tests)."""

from __future__ import annotations

import enum

import attrs

from ._spec import ChildState, Restart, Strategy


class SupervisorState(enum.StrEnum):
    STARTING = "starting"
    """``run()`` is starting the children in order."""
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    """Not running: never started, shut down, or every child ended for good."""
    GAVE_UP = "gave_up"
    """The restart intensity was exceeded; ``run()`` raised ``RestartIntensityExceeded``."""


@attrs.frozen(kw_only=True)
class ChildStatistics:
    id: str
    """The spec's id, or the key for a keyed child."""
    state: ChildState
    restart_type: Restart
    restart_count: int
    """Restarts since the supervisor was created."""
    restarts_in_window: int
    """This child's restarts within the last ``period_s``."""
    last_failure: str | None
    """``repr()`` of the last exception the child raised."""
    last_failure_at: float | None
    """trio time of that failure."""
    started_at: float | None
    """trio time the current (or last) run of the child called ``task_status.started()``."""


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    name: str
    strategy: Strategy
    state: SupervisorState
    children: tuple[ChildStatistics, ...]
    """In start order (spec order, or insertion order for keyed children)."""
    restarts_in_window: int
    """Restarts counted against the intensity within the last ``period_s``
    (summed over keys for a keyed supervisor, whose budget is per key)."""
    total_restarts: int
    max_restarts: int
    period_s: float
