"""Measure the event loop's lag and tell admission, so admission follows what the process keeps up with."""

from __future__ import annotations

import trio

from concierge.domain import Admission


async def run_loop_lag_monitor(
    *,
    admission: Admission,
    interval_s: float = 0.05,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sleep ``interval_s`` again and again; how late each wake-up comes is the loop's lag.

    A task that becomes runnable waits behind every other runnable task, so the lateness
    is what an acknowledgement waits too, at least.
    """
    task_status.started()
    while True:
        due = trio.current_time() + interval_s
        await trio.sleep_until(due)
        admission.observe_lag(max(0.0, trio.current_time() - due))
