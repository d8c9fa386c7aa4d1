"""OTP-style supervision for trio: restart strategies, restart types, intensity and backoff.

Generic on purpose: it knows trio, attrs and structlog, nothing of the application.

    root = Supervisor(
        name="root",
        children=[
            ChildSpec(id="store", start=run_store),          # start(task_status=...)
            ChildSpec(id="web", start=serve_web, shutdown_s=10),
        ],
        strategy=Strategy.REST_FOR_ONE,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)   # returns once every child called started()
        ...
        await root.shutdown()           # reverse start order, each within shutdown_s

Only ``Exception`` is a failure; ``Cancelled`` and ``KeyboardInterrupt`` propagate.
Past ``max_restarts`` restarts within ``period_s`` a :class:`Supervisor` stops its
children and raises :class:`RestartIntensityExceeded` to its parent. A
:class:`KeyedSupervisor` gives up on the offending key only.
"""

from ._backoff import Backoff as Backoff
from ._errors import (
    ChildAlreadyRunning as ChildAlreadyRunning,
    ChildStartError as ChildStartError,
    MaxChildrenReached as MaxChildrenReached,
    RestartIntensityExceeded as RestartIntensityExceeded,
    SupervisorError as SupervisorError,
    SupervisorNotRunning as SupervisorNotRunning,
)
from ._events import ErrorContext as ErrorContext
from ._keyed import KeyedSupervisor as KeyedSupervisor
from ._spec import (
    ChildSpec as ChildSpec,
    ChildState as ChildState,
    Restart as Restart,
    Strategy as Strategy,
)
from ._stats import (
    ChildStatistics as ChildStatistics,
    SupervisorState as SupervisorState,
    SupervisorStatistics as SupervisorStatistics,
)
from ._supervisor import Supervisor as Supervisor

__all__ = [
    "Backoff",
    "ChildAlreadyRunning",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "ChildStatistics",
    "ErrorContext",
    "KeyedSupervisor",
    "MaxChildrenReached",
    "Restart",
    "RestartIntensityExceeded",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "SupervisorState",
    "SupervisorStatistics",
]


def _fixup_module_metadata() -> None:
    # Tracebacks and reprs say supervisors.X, not supervisors._x.X (as trio does).
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("supervisors._"):
            obj.__module__ = __name__


_fixup_module_metadata()
del _fixup_module_metadata
