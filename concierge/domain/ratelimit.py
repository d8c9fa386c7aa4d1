"""Per-user token buckets: on the session cache, or in process while the cache is down.

The cache holds the buckets so that replicas share them; when it raises
``CacheUnavailable`` the limiter keeps limiting with a bounded in-process bucket
per user instead of letting everyone through (or no one).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs
import structlog
import trio

from concierge.store import BucketState, CacheUnavailable, SessionCache, refill_and_take

log = structlog.get_logger(__name__)

USER_BUCKETS = "user"
"""The prefix of per-user rate-limit bucket names: ``user:<user key>``."""


@attrs.define(kw_only=True)
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; a message takes one.

    The in-process twin of the session cache's buckets, by the same rule
    (``refill_and_take``), for while the cache is down.
    """

    rate_per_s: float
    burst: int
    state: BucketState | None = None

    def __attrs_post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError(
                f"a token bucket needs rate_per_s > 0 and burst >= 1, got {self.rate_per_s}, {self.burst}"
            )

    def take(self, now: float) -> bool:
        """Take one token at monotonic time ``now``; ``False`` when the bucket is empty."""
        granted, self.state = refill_and_take(
            self.state, now=now, rate_per_s=self.rate_per_s, burst=self.burst
        )
        return granted


class UserRateLimiter:
    """``allow(user_key)``: whether this user may send one more message now."""

    def __init__(
        self,
        *,
        cache: SessionCache,
        rate_per_min: float,
        burst: int,
        clock: Callable[[], float] = trio.current_time,
        max_local_buckets: int = 10_000,
        prefix: str = USER_BUCKETS,
    ) -> None:
        if rate_per_min <= 0 or burst < 1:
            raise ValueError(
                f"rate_per_min must be > 0 and burst >= 1, got {rate_per_min}, {burst}"
            )
        self._cache = cache
        self._rate_per_s = rate_per_min / 60.0
        self._burst = burst
        self._clock = clock
        self._max_local = max_local_buckets
        self._prefix = prefix
        self._local: OrderedDict[str, TokenBucket] = OrderedDict()
        self.limited = 0
        self.fallbacks = 0

    async def allow(self, user_key: str) -> bool:
        now = self._clock()
        bucket = f"{self._prefix}:{user_key}"
        try:
            allowed = await self._cache.take_token(
                bucket, rate_per_s=self._rate_per_s, burst=self._burst, now=now
            )
        except CacheUnavailable:
            self.fallbacks += 1
            log.warning("ratelimit.cache_unavailable", fallback="in_process")
            allowed = self._take_local(bucket, now)
        if not allowed:
            self.limited += 1
        return allowed

    def _take_local(self, bucket: str, now: float) -> bool:
        local = self._local.get(bucket)
        if local is None:
            local = TokenBucket(rate_per_s=self._rate_per_s, burst=self._burst)
            self._local[bucket] = local
            if len(self._local) > self._max_local:
                self._local.popitem(last=False)
        else:
            self._local.move_to_end(bucket)
        return local.take(now)
