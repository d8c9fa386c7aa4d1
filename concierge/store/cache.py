"""Opening the session cache from settings: Redis when ``REDIS_URL`` is set, memory otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import trio

from concierge.settings import StoreSettings
from concierge.store.cache_memory import DEFAULT_MAX_ENTRIES, MemorySessionCache
from concierge.store.cache_redis import DEFAULT_KEY_PREFIX, RedisSessionCache
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
