"""Opening the session cache from settings, and watching it for ``/health`` and ``/metrics``.

``open_session_cache`` picks Redis when ``REDIS_URL`` is set, memory otherwise.
``CacheMonitor`` reports ``redis:responseTime`` (or ``memory:responseTime``); a cache
that is down is a ``warn``, never a ``fail``: turns go on with context rebuilt from
the durable store. ``run_cache_monitor`` is the actor that pings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import trio

from concierge.observability import Status
from concierge.settings import StoreSettings
from concierge.store.availability import Availability, run_pings
from concierge.store.cache_memory import DEFAULT_MAX_ENTRIES, MemorySessionCache
from concierge.store.cache_redis import DEFAULT_KEY_PREFIX, RedisSessionCache
from concierge.store.errors import CacheUnavailable
from concierge.store.roles import SessionCache

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
            "cache.opened",
            backend=redis_cache.backend,
            key_prefix=key_prefix,
            timeout_s=settings.redis_timeout_s,
        )
        yield redis_cache


class CacheMonitor(Availability):
    """The session cache's state: down is only ``warn`` (context is rebuilt); unknown until pinged."""

    def __init__(self, *, backend: str, warn_latency_s: float = 0.1) -> None:
        super().__init__(
            kind="cache",
            description="session cache",
            backend=backend,
            warn_latency_s=warn_latency_s,
            down_status=Status.WARN,
            assume_up=False,
        )


async def run_cache_monitor(
    *,
    cache: SessionCache,
    monitor: CacheMonitor,
    interval_s: float,
    down_interval_s: float = 1.0,
    timeout_s: float = 2.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping the cache; see ``run_pings``."""
    await run_pings(
        ping=cache.ping,
        backend=cache.backend,
        monitor=monitor,
        errors=(CacheUnavailable,),
        interval_s=interval_s,
        down_interval_s=down_interval_s,
        timeout_s=timeout_s,
        task_status=task_status,
    )
