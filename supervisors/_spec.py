"""What a supervisor is told: restart strategies, restart types and child specifications."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

import attrs


class Strategy(enum.StrEnum):
    """Which siblings are restarted with a failed child (OTP's restart strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Restart only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Stop every other child in reverse start order, then start them all in order."""
    REST_FOR_ONE = "rest_for_one"
    """Stop the children started after the failed one, then restart it and them in order."""


class Restart(enum.StrEnum):
    """When a child that ended is started again (OTP's restart types)."""

    PERMANENT = "permanent"
    """Always restarted, even after a normal return."""
    TRANSIENT = "transient"
    """Restarted only when it raised an ``Exception``."""
    TEMPORARY = "temporary"
    """Never restarted, not even when a sibling's failure stops it."""


class ChildState(enum.StrEnum):
    """Where a child is in its life, as ``statistics()`` reports it."""

    STARTING = "starting"
    """Called, has not yet called ``task_status.started()``."""
    RUNNING = "running"
    RESTARTING = "restarting"
    """Waiting out its backoff (or its group's) before the next start."""
    STOPPING = "stopping"
    """Cancelled by its supervisor and not yet gone."""
    STOPPED = "stopped"
    """Returned normally or was stopped, and is not going to be restarted."""
    FAILED = "failed"
    """Raised and is not going to be restarted."""


def wants_restart(restart: Restart, failure: BaseException | None) -> bool:
    """Whether a child of this restart type is started again after this exit."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return failure is not None
    return False


def _check_id(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"ChildSpec.id must be a non-empty string, got {value!r}")


def _check_start(
    _instance: object, _attribute: object, value: Callable[..., Awaitable[None]]
) -> None:
    if not callable(value):
        raise TypeError(f"ChildSpec.start must be an async callable, got {value!r}")


def _check_shutdown(_instance: object, _attribute: object, value: float) -> None:
    if not value > 0:
        raise ValueError(f"ChildSpec.shutdown_s must be > 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class ChildSpec:
    """How to run one child of a :class:`Supervisor`.

    ``start`` is called as ``await start(task_status=...)`` and must call
    ``task_status.started()`` (optionally with a value) once it is ready to serve;
    until then its siblings wait, as OTP's ``start_link`` does.
    """

    id: str = attrs.field(validator=_check_id)
    """Unique among its siblings; appears in logs and statistics."""
    start: Callable[..., Awaitable[None]] = attrs.field(validator=_check_start)
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, validator=attrs.validators.instance_of(Restart)
    )
    shutdown_s: float = attrs.field(default=5.0, validator=_check_shutdown)
    """How long a cancelled child may take to finish its cleanup before it is abandoned.
    Give a nested supervisor more than the sum of its own children's."""
