"""The structured log events operators read to follow restarts (OTP's supervisor reports)."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import structlog

from ._child import ChildRuntime

log = structlog.get_logger(__name__)


class ErrorContext(enum.StrEnum):
    """The ``error_context`` field: what the supervisor was doing when the child ended."""

    CHILD_TERMINATED = "child_terminated"
    """It ended while running (with ``caused_by=None`` for a normal return)."""
    START_ERROR = "start_error"
    """It ended before calling ``task_status.started()``."""
    NORMAL = "normal"
    """It returned and is not restarted."""
    SHUTDOWN = "shutdown"
    """Its supervisor stopped it."""
    SHUTDOWN_ERROR = "shutdown_error"
    """It raised while being stopped."""
    SHUTDOWN_TIMEOUT = "shutdown_timeout"
    """It outlived its ``shutdown_s`` after cancellation and was abandoned."""
    REACHED_MAX_RESTART_INTENSITY = "reached_max_restart_intensity"


def _cause(failure: BaseException | None) -> dict[str, Any]:
    if failure is None:
        return {"caused_by": None}
    return {"caused_by": repr(failure), "exc_info": failure}


@attrs.frozen(kw_only=True)
class Reporter:
    """Emits one supervisor's events with the same fields every time."""

    supervisor: str
    intensity: int
    period_s: float
    routine_at_debug: bool = False
    """Starts and quiet exits at debug: a keyed supervisor starts one child per user."""

    def _routine(self) -> Any:
        return log.debug if self.routine_at_debug else log.info

    def _base(self, child: ChildRuntime) -> dict[str, Any]:
        return {
            "supervisor": self.supervisor,
            "child": child.id,
            "restart_type": str(child.restart),
            "restart_count": child.restart_count,
        }

    def started(self, child: ChildRuntime) -> None:
        self._routine()("supervisor.child_started", **self._base(child))

    def restarted(
        self,
        child: ChildRuntime,
        *,
        context: ErrorContext,
        failure: BaseException | None,
        backoff_s: float,
        restarts_in_window: int,
    ) -> None:
        log.warning(
            "supervisor.child_restarted",
            **self._base(child),
            error_context=str(context),
            restarts_in_window=restarts_in_window,
            intensity=self.intensity,
            period_s=self.period_s,
            backoff_s=backoff_s,
            **_cause(failure),
        )

    def exited(
        self, child: ChildRuntime, *, context: ErrorContext, failure: BaseException | None = None
    ) -> None:
        quiet = failure is None and context in (ErrorContext.NORMAL, ErrorContext.SHUTDOWN)
        emit = self._routine() if quiet else log.warning
        emit(
            "supervisor.child_exited",
            **self._base(child),
            error_context=str(context),
            **_cause(failure),
        )

    def gave_up(
        self, child: ChildRuntime, *, failure: BaseException | None, restarts_in_window: int
    ) -> None:
        log.error(
            "supervisor.gave_up",
            **self._base(child),
            error_context=str(ErrorContext.REACHED_MAX_RESTART_INTENSITY),
            restarts_in_window=restarts_in_window,
            intensity=self.intensity,
            period_s=self.period_s,
            **_cause(failure),
        )
