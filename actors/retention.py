"""Data retention: erase message texts older than the retention period, keep the metadata.

Texts of conversations, processed inbox rows and settled outbox rows are blanked;
interaction records (provider, model, tokens, latency, outcome) stay for
statistics. A sweep that finds the store down is skipped until the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
import trio

from concierge.protocol import utcnow
from concierge.store import Erasure, StoreUnavailable

log = structlog.get_logger(__name__)


async def run_retention(
    *,
    store: Erasure,
    retention_days: int,
    interval_s: float,
    now: Callable[[], datetime] = utcnow,
    swept: trio.MemorySendChannel[int] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sweep at start, then every ``interval_s``; ``retention_days=0`` keeps texts forever.

    ``swept`` (optional, non-blocking) receives the rows erased by each sweep.
    """
    if retention_days <= 0:
        log.info("retention.disabled")
        task_status.started()
        await trio.sleep_forever()
    task_status.started()
    while True:
        cutoff = now() - timedelta(days=retention_days)
        try:
            erased = await store.erase_texts_before(cutoff)
        except StoreUnavailable as exc:
            log.warning("retention.sweep_skipped", error=str(exc))
        else:
            log.info("retention.texts_erased", rows=erased, cutoff=cutoff.isoformat())
            if swept is not None:
                try:
                    swept.send_nowait(erased)
                except trio.WouldBlock:
                    pass
        await trio.sleep(interval_s)
