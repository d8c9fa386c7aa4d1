"""Stopping one child: cancel it, wait up to its shutdown time, and say how it went."""

from __future__ import annotations

import trio

from ._child import ChildRuntime, Incarnation
from ._events import ErrorContext, Reporter
from ._spec import ChildState


async def stop_incarnation(
    inc: Incarnation, *, shutdown_s: float, reason: str, gone: trio.Event | None = None
) -> bool:
    """Cancel the child and wait up to ``shutdown_s`` for ``gone``; False if it was abandoned.

    trio cannot kill a task: a child that shields itself past ``shutdown_s`` keeps
    running, but nobody waits for it any more (OTP's ``brutal_kill`` is not available).
    """
    inc.stopping = True
    inc.scope.cancel(reason=reason)
    event = gone if gone is not None else inc.done
    with trio.move_on_after(shutdown_s):
        await event.wait()
    return event.is_set()


async def stop_child(
    child: ChildRuntime,
    inc: Incarnation,
    report: Reporter,
    *,
    shutdown_s: float,
    reason: str,
    gone: trio.Event | None = None,
) -> None:
    """Stop a running child and log the outcome: stopped, failed while stopping, or abandoned."""
    child.state = ChildState.STOPPING
    if not await stop_incarnation(inc, shutdown_s=shutdown_s, reason=reason, gone=gone):
        report.exited(child, context=ErrorContext.SHUTDOWN_TIMEOUT)
        return
    child.state = ChildState.STOPPED
    if inc.failure is not None:
        child.note_failure(inc.failure, trio.current_time())
        report.exited(child, context=ErrorContext.SHUTDOWN_ERROR, failure=inc.failure)
    else:
        report.exited(child, context=ErrorContext.SHUTDOWN)
