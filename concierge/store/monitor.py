"""Whether the durable store and the session cache answer, learned from pings.

A ``Monitor`` remembers the last ping (latency, error, time), flips between up and
down, lets a caller wait for either, and reports itself as a ``/health`` check
(``postgres:responseTime``, ``redis:responseTime``, ...) and Prometheus metrics.
The store and the cache differ only in parameters (``Monitor.of_store``,
``Monitor.of_cache``): how bad "down" is (``fail`` for the store, which stops ingest;
``warn`` for the cache, whose context is rebuilt from the store), what is assumed
before the first ping, and how long a ping may take. ``run_monitor`` pings either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.observability import Check, Status
from concierge.protocol import utcnow
from concierge.store.errors import StoreError

log = structlog.get_logger(__name__)


class Monitor:
    """The last known state of one service (``kind`` names it in logs and metrics)."""

    def __init__(
        self,
        *,
        kind: str,
        description: str,
        backend: str,
        warn_latency_s: float,
        down_status: Status,
        assume_up: bool,
        ping_timeout_s: float,
    ) -> None:
        self.kind = kind
        self.description = description
        self.backend = backend
        self.warn_latency_s = warn_latency_s
        self.down_status = down_status
        self.ping_timeout_s = ping_timeout_s
        self._available: bool | None = True if assume_up else None
        self._back = trio.Event()
        self._down = trio.Event()
        if assume_up:
            self._back.set()
        self._latency_s: float | None = None
        self._error: str | None = None
        self._checked_at = utcnow()
        self._failures = 0
        self._outages = 0

    @classmethod
    def of_store(
        cls, *, backend: str, warn_latency_s: float = 0.25, ping_timeout_s: float = 5.0
    ) -> Monitor:
        """The durable store: down is ``fail`` (ingest answers 503); assumed up once opened."""
        return cls(
            kind="store",
            description="durable store",
            backend=backend,
            warn_latency_s=warn_latency_s,
            down_status=Status.FAIL,
            assume_up=True,
            ping_timeout_s=ping_timeout_s,
        )

    @classmethod
    def of_cache(
        cls, *, backend: str, warn_latency_s: float = 0.1, ping_timeout_s: float = 2.0
    ) -> Monitor:
        """The session cache: down is only ``warn`` (turns go on); unknown until pinged."""
        return cls(
            kind="cache",
            description="session cache",
            backend=backend,
            warn_latency_s=warn_latency_s,
            down_status=Status.WARN,
            assume_up=False,
            ping_timeout_s=ping_timeout_s,
        )

    @property
    def available(self) -> bool:
        return self._available is True

    async def wait_available(self) -> None:
        """Return once the service answers (at once if it does now)."""
        while self._available is not True:
            await self._back.wait()

    async def wait_unavailable(self) -> None:
        """Return once the service is seen down (at once if it is now)."""
        while self._available is not False:
            await self._down.wait()

    def record_success(self, latency_s: float) -> None:
        self._latency_s = latency_s
        self._checked_at = utcnow()
        self._error = None
        if self._available is not True:
            if self._available is False:
                log.info(
                    f"{self.kind}.recovered",
                    backend=self.backend,
                    latency_ms=round(latency_s * 1000, 1),
                )
            self._available = True
            self._down = trio.Event()
            self._back.set()

    def record_failure(self, error: str) -> None:
        """Mark the service down: the monitor's own ping, or any caller that saw it fail."""
        self._failures += 1
        self._error = error
        self._checked_at = utcnow()
        if self._available is not False:
            self._available = False
            self._outages += 1
            self._back = trio.Event()
            self._down.set()
            log.warning(f"{self.kind}.became_unavailable", backend=self.backend, error=error)

    def health_checks(self) -> Iterable[Check]:
        output: str | None
        if self._available is None:
            status, output = Status.WARN, "not checked yet"
        elif not self._available:
            status, output = self.down_status, self._error
        elif self._latency_s is not None and self._latency_s > self.warn_latency_s:
            status, output = Status.WARN, f"slower than {self.warn_latency_s * 1000:g} ms"
        else:
            status, output = Status.PASS, None
        yield Check(
            component=self.backend,
            measurement="responseTime",
            status=status,
            component_type="datastore",
            observed_value=None if self._latency_s is None else round(self._latency_s * 1000, 2),
            observed_unit="ms",
            output=output,
            time=self._checked_at,
        )

    def metrics(self) -> Iterable[Metric]:
        name, what = f"concierge_{self.kind}", self.description
        up = GaugeMetricFamily(f"{name}_up", f"1 when the {what} answers", labels=["backend"])
        up.add_metric([self.backend], 1.0 if self._available else 0.0)
        yield up
        latency = GaugeMetricFamily(
            f"{name}_ping_seconds", f"latency of the last {what} ping", labels=["backend"]
        )
        latency.add_metric([self.backend], self._latency_s or 0.0)
        yield latency
        failures = CounterMetricFamily(
            f"{name}_ping_failures", f"{what} pings or calls that failed", labels=["backend"]
        )
        failures.add_metric([self.backend], float(self._failures))
        yield failures
        outages = CounterMetricFamily(
            f"{name}_outages", f"times the {what} went from up to down", labels=["backend"]
        )
        outages.add_metric([self.backend], float(self._outages))
        yield outages


async def run_monitor(
    *,
    ping: Callable[[], Awaitable[float]],
    monitor: Monitor,
    interval_s: float,
    down_interval_s: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping every ``interval_s`` (every ``down_interval_s`` while down, to see it come back).

    ``ping`` is the store's or the cache's: it returns its latency or raises a
    ``StoreError``. Reports started after the first ping, so ``/health`` has a
    measurement from the start.
    """
    timeout_s = monitor.ping_timeout_s

    async def probe() -> None:
        with trio.move_on_after(timeout_s) as scope:
            try:
                latency_s = await ping()
            except StoreError as exc:
                monitor.record_failure(str(exc))
            else:
                monitor.record_success(latency_s)
        if scope.cancelled_caught:
            monitor.record_failure(f"{monitor.backend}: ping took longer than {timeout_s:g} s")

    await probe()
    task_status.started()
    while True:
        await trio.sleep(interval_s if monitor.available else min(interval_s, down_interval_s))
        await probe()
