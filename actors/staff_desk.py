"""The staff desk: acts on what staff write in the staff chat, one message at a time.

The router hands it the ``STAFF`` inbox rows; ``handle_staff_message`` does what each
asks and settles its row. A row it never got (a full queue, a crash) stays pending
in the inbox and comes back through the replayer, like a user's message.
"""

from __future__ import annotations

import structlog
import trio

from concierge.domain import Desk, handle_staff_message
from concierge.protocol import StaffDeskMsg

log = structlog.get_logger(__name__)

STAFF_QUEUE = 64


async def run_staff_desk(
    *,
    inbox: trio.MemoryReceiveChannel[StaffDeskMsg],
    desk: Desk,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Handle staff messages in arrival order until cancelled.

    The inbox belongs to whoever built it (a restarted desk reads it again), so it is
    not closed here.
    """
    task_status.started()
    async for msg in inbox:
        with structlog.contextvars.bound_contextvars(
            correlation_id=msg.correlation_id, inbox_id=msg.inbox_id
        ):
            outcome = await handle_staff_message(desk, msg)
            log.info("staff.message_handled", channel=msg.channel.value, outcome=outcome)
