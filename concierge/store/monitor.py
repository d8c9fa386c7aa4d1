"""Health and metrics of the durable store, fed by a periodic ping.

``StoreMonitor`` is the store's ``Observable`` (``postgres:responseTime`` or
``sqlite:responseTime`` in ``/health``) and tells other actors whether the store
is up, and lets them wait for it to come back (to drain what piled up meanwhile).
``run_store_monitor`` is the actor that pings.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.observability import Check, Status
from concierge.protocol import utcnow
from concierge.store.base import Store
from concierge.store.errors import StoreError

log = structlog.get_logger(__name__)


class StoreMonitor:
    """The store's last known state; ``available`` flips on pings and reported failures."""

    def __init__(self, *, backend: str, warn_latency_s: float = 0.25) -> None:
        self.backend = backend
        self.warn_latency_s = warn_latency_s
        self._available = True  # the store opened, so it answered a moment ago
        self._back = trio.Event()
        self._back.set()
        self._down = trio.Event()
        self._latency_s: float | None = None
        self._error: str | None = None
        self._checked_at = utcnow()
        self._pings = 0
        self._failures = 0
        self._outages = 0

    @property
    def available(self) -> bool:
        return self._available

    async def wait_available(self) -> None:
        """Return once the store answers again (at once if it does now)."""
        while not self._available:
            await self._back.wait()

    async def wait_unavailable(self) -> None:
        """Return once the store is seen down (at once if it is now)."""
        while self._available:
            await self._down.wait()

    def record_success(self, latency_s: float) -> None:
        self._pings += 1
        self._latency_s = latency_s
        self._checked_at = utcnow()
        self._error = None
        if not self._available:
            self._available = True
            self._down = trio.Event()
            self._back.set()
            log.info("store.recovered", backend=self.backend, latency_ms=round(latency_s * 1000, 1))

    def record_failure(self, error: str) -> None:
        """Mark the store down (the monitor's own ping, or any caller that got ``StoreUnavailable``)."""
        self._failures += 1
        self._error = error
        self._checked_at = utcnow()
        if self._available:
            self._available = False
            self._outages += 1
            self._back = trio.Event()
            self._down.set()
            log.warning("store.became_unavailable", backend=self.backend, error=error)

    def health_checks(self) -> Iterable[Check]:
        if not self._available:
            status = Status.FAIL
        elif self._latency_s is not None and self._latency_s > self.warn_latency_s:
            status = Status.WARN
        else:
            status = Status.PASS
        yield Check(
            component=self.backend,
            measurement="responseTime",
            status=status,
            component_type="datastore",
            observed_value=None if self._latency_s is None else round(self._latency_s * 1000, 2),
            observed_unit="ms",
            output=self._error if status is Status.FAIL else None,
            time=self._checked_at,
        )

    def metrics(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "concierge_store_up", "1 when the durable store answers", labels=["backend"]
        )
        up.add_metric([self.backend], 1.0 if self._available else 0.0)
        yield up
        latency = GaugeMetricFamily(
            "concierge_store_ping_seconds", "latency of the last store ping", labels=["backend"]
        )
        latency.add_metric([self.backend], self._latency_s or 0.0)
        yield latency
        failures = CounterMetricFamily(
            "concierge_store_ping_failures", "store pings or calls that failed", labels=["backend"]
        )
        failures.add_metric([self.backend], float(self._failures))
        yield failures
        outages = CounterMetricFamily(
            "concierge_store_outages", "times the store went from up to down", labels=["backend"]
        )
        outages.add_metric([self.backend], float(self._outages))
        yield outages


async def run_store_monitor(
    *,
    store: Store,
    monitor: StoreMonitor,
    interval_s: float,
    down_interval_s: float = 1.0,
    timeout_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping every ``interval_s`` (every ``down_interval_s`` while down, to see it come back).

    Reports started after the first ping, so ``/health`` has a measurement from the start.
    """
    await _probe(store, monitor, timeout_s)
    task_status.started()
    while True:
        await trio.sleep(interval_s if monitor.available else min(interval_s, down_interval_s))
        await _probe(store, monitor, timeout_s)


async def _probe(store: Store, monitor: StoreMonitor, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s) as scope:
        try:
            latency_s = await store.ping()
        except StoreError as exc:
            monitor.record_failure(str(exc))
        else:
            monitor.record_success(latency_s)
    if scope.cancelled_caught:
        monitor.record_failure(f"{store.backend}: ping took longer than {timeout_s:g} s")
