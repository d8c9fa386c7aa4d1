"""Health and metrics of the durable store, fed by a periodic ping.

``StoreMonitor`` is the store's ``Observable`` (``postgres:responseTime`` or
``sqlite:responseTime`` in ``/health``) and tells other actors whether the store
is up, and lets them wait for it to come back (to drain what piled up meanwhile).
``run_store_monitor`` is the actor that pings.
"""

from __future__ import annotations

import trio

from concierge.observability import Status
from concierge.store.availability import Availability, run_pings
from concierge.store.errors import StoreError
from concierge.store.roles import Health


class StoreMonitor(Availability):
    """The durable store's state: down is ``fail`` (ingest answers 503); assumed up once opened."""

    def __init__(self, *, backend: str, warn_latency_s: float = 0.25) -> None:
        super().__init__(
            kind="store",
            description="durable store",
            backend=backend,
            warn_latency_s=warn_latency_s,
            down_status=Status.FAIL,
            assume_up=True,
        )


async def run_store_monitor(
    *,
    store: Health,
    monitor: StoreMonitor,
    interval_s: float,
    down_interval_s: float = 1.0,
    timeout_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping the store; see ``run_pings``."""
    await run_pings(
        ping=store.ping,
        backend=store.backend,
        monitor=monitor,
        errors=(StoreError,),
        interval_s=interval_s,
        down_interval_s=down_interval_s,
        timeout_s=timeout_s,
        task_status=task_status,
    )
