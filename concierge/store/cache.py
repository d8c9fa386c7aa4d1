"""Opening the session cache from settings, and watching it for ``/health`` and ``/metrics``.

``open_session_cache`` picks Redis when ``REDIS_URL`` is set, memory otherwise.
``CacheMonitor`` reports ``redis:responseTime`` (or ``memory:responseTime``); a cache
that is down is a ``warn``, never a ``fail``: turns go on with context rebuilt from
the durable store. ``run_cache_monitor`` is the actor that pings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.observability import Check, Status
from concierge.protocol import utcnow
from concierge.settings import StoreSettings
from concierge.store.base import SessionCache
from concierge.store.cache_memory import DEFAULT_MAX_ENTRIES, MemorySessionCache
from concierge.store.cache_redis import DEFAULT_KEY_PREFIX, RedisSessionCache
from concierge.store.errors import CacheUnavailable

log = structlog.get_logger(__name__)


@asynccontextmanager
async def open_session_cache(
    settings: StoreSettings,
    *,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> AsyncIterator[SessionCache]:
    """Redis at ``settings.redis_url`` (not contacted until first use), else memory.

    Opening never waits for Redis: a cache that is down at start is reported by
    the monitor and recovers by itself.
    """
    if settings.redis_url is None:
        cache = MemorySessionCache(max_entries=max_entries)
        log.info("cache.opened", backend=cache.backend, max_entries=max_entries)
        try:
            yield cache
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await cache.aclose()
        return
    async with RedisSessionCache.open(
        settings.redis_url, key_prefix=key_prefix, timeout_s=settings.redis_timeout_s
    ) as redis_cache:
        log.info(
            "cache.opened", backend=redis_cache.backend, key_prefix=key_prefix,
            timeout_s=settings.redis_timeout_s,
        )
        yield redis_cache


class CacheMonitor:
    """The session cache's last known state, from pings (and callers that saw it fail)."""

    def __init__(self, *, backend: str, warn_latency_s: float = 0.1) -> None:
        self.backend = backend
        self.warn_latency_s = warn_latency_s
        self._available: bool | None = None  # unknown until the first ping
        self._back = trio.Event()
        self._down = trio.Event()
        self._latency_s: float | None = None
        self._error: str | None = None
        self._checked_at = utcnow()
        self._pings = 0
        self._failures = 0
        self._outages = 0

    @property
    def available(self) -> bool:
        return self._available is True

    async def wait_available(self) -> None:
        """Return once a ping succeeded since the cache was last seen down."""
        while self._available is not True:
            await self._back.wait()

    async def wait_unavailable(self) -> None:
        """Return once the cache is seen down (at once if it is now)."""
        while self._available is not False:
            await self._down.wait()

    def record_success(self, latency_s: float) -> None:
        self._pings += 1
        self._latency_s = latency_s
        self._checked_at = utcnow()
        self._error = None
        if self._available is not True:
            if self._available is False:
                log.info("cache.recovered", backend=self.backend, latency_ms=round(latency_s * 1000, 1))
            self._available = True
            self._down = trio.Event()
            self._back.set()

    def record_failure(self, error: str) -> None:
        self._pings += 1
        self._failures += 1
        self._error = error
        self._checked_at = utcnow()
        if self._available is not False:
            self._available = False
            self._outages += 1
            self._back = trio.Event()
            self._down.set()
            log.warning("cache.became_unavailable", backend=self.backend, error=error)

    def health_checks(self) -> Iterable[Check]:
        output: str | None
        if self._available is None:
            status, output = Status.WARN, "not checked yet"
        elif not self._available:
            status, output = Status.WARN, self._error
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
        up = GaugeMetricFamily("concierge_cache_up", "1 when the session cache answers", labels=["backend"])
        up.add_metric([self.backend], 1.0 if self._available else 0.0)
        yield up
        latency = GaugeMetricFamily(
            "concierge_cache_ping_seconds", "latency of the last session cache ping", labels=["backend"]
        )
        latency.add_metric([self.backend], self._latency_s or 0.0)
        yield latency
        failures = CounterMetricFamily(
            "concierge_cache_ping_failures", "session cache pings that failed", labels=["backend"]
        )
        failures.add_metric([self.backend], float(self._failures))
        yield failures
        outages = CounterMetricFamily(
            "concierge_cache_outages", "times the session cache went from up to down", labels=["backend"]
        )
        outages.add_metric([self.backend], float(self._outages))
        yield outages


async def run_cache_monitor(
    *,
    cache: SessionCache,
    monitor: CacheMonitor,
    interval_s: float,
    down_interval_s: float = 1.0,
    timeout_s: float = 2.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping every ``interval_s`` (every ``down_interval_s`` while down, to see it come back).

    Reports started after the first ping, so ``/health`` has a measurement from the start.
    """
    await _probe(cache, monitor, timeout_s)
    task_status.started()
    while True:
        await trio.sleep(interval_s if monitor.available else min(interval_s, down_interval_s))
        await _probe(cache, monitor, timeout_s)


async def _probe(cache: SessionCache, monitor: CacheMonitor, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s) as scope:
        try:
            latency_s = await cache.ping()
        except CacheUnavailable as exc:
            monitor.record_failure(str(exc))
        else:
            monitor.record_success(latency_s)
    if scope.cancelled_caught:
        monitor.record_failure(f"{cache.backend}: ping took longer than {timeout_s:g} s")
