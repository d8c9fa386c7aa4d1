"""The handoff sweeper: close handoffs nobody took up within ``CONCIERGE_HANDOFF_TIMEOUT_S``,
and count the open ones for ``/health`` (an urgent one open is a warning)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import structlog
import trio

from concierge.domain import HandoffDesk, Languages, OpenHandoffs, StaffChat, sweep_handoffs
from concierge.protocol import Channel, OutboxMsg, utcnow

log = structlog.get_logger(__name__)


async def run_handoff_sweeper(
    *,
    store: HandoffDesk,
    languages: Languages,
    timeout_s: float,
    interval_s: float = 60.0,
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]] | None = None,
    watch: OpenHandoffs | None = None,
    staff: StaffChat | None = None,
    now: Callable[[], datetime] = utcnow,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval_s`` (or when ``watch`` is poked), close the handoffs that timed out,
    tell their users (and ``staff``), and count what stays open into ``watch``."""
    watch = watch or OpenHandoffs()
    task_status.started()
    while True:
        closed = await sweep_handoffs(
            store,
            languages=languages,
            timeout_s=timeout_s,
            outbox_nudges=outbox_nudges,
            now=now(),
            staff=staff,
        )
        if closed:
            log.info("handoff.timeouts_swept", closed=closed)
        await watch.count(store)
        await watch.wait_poke(interval_s)
