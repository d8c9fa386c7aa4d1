from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings, strategies as st

from concierge.domain import UserRateLimiter
from concierge.domain.ratelimit import TokenBucket
from concierge.store import CacheUnavailable
from concierge.store.cache_memory import MemorySessionCache

RATES = st.floats(min_value=0.01, max_value=50.0, allow_nan=False, allow_infinity=False)
BURSTS = st.integers(min_value=1, max_value=20)
GAPS = st.lists(
    st.floats(min_value=0.0, max_value=30.0, allow_nan=False, allow_infinity=False), max_size=200
)


def _times(gaps: Sequence[float]) -> list[float]:
    now, times = 0.0, []
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@given(rate=RATES, burst=BURSTS, gaps=GAPS)
@settings(max_examples=300, deadline=None)
def test_bucket_never_allows_more_than_burst_plus_refill(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate_per_s=rate, burst=burst)
    times = _times(gaps)
    allowed = [t for t in times if bucket.take(t)]
    # Over any window [a, b] of allowed takes, at most burst + rate * (b - a) got through.
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + rate * (allowed[j] - start) + 1e-6


@given(rate=RATES, burst=BURSTS, gaps=GAPS)
@settings(max_examples=300, deadline=None)
def test_bucket_allows_whenever_a_token_has_refilled(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Compared with a reference model, the bucket refuses nothing it should allow."""
    bucket = TokenBucket(rate_per_s=rate, burst=burst)
    tokens, last = float(burst), None
    for now in _times(gaps):
        if last is not None:
            tokens = min(float(burst), tokens + (now - last) * rate)
        last = now
        expected = tokens >= 1.0
        if expected:
            tokens -= 1.0
        assert bucket.take(now) is expected


@given(burst=BURSTS, n=st.integers(min_value=0, max_value=50))
def test_a_burst_at_one_instant_gets_exactly_burst_tokens(burst: int, n: int) -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=burst)
    assert sum(bucket.take(5.0) for _ in range(n)) == min(n, burst)


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=0, burst=1)


class _BucketCache(MemorySessionCache):
    """The in-memory session cache, noting the buckets it was asked for; ``down`` breaks them."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.buckets: set[str] = set()

    async def take_token(self, bucket: str, *, rate_per_s: float, burst: int, now: float) -> bool:
        if self.down:
            raise CacheUnavailable("down")
        self.buckets.add(bucket)
        return await super().take_token(bucket, rate_per_s=rate_per_s, burst=burst, now=now)


@pytest.mark.anyio
async def test_limiter_uses_the_cache_buckets_per_user() -> None:
    clock = [0.0]
    cache = _BucketCache()
    limiter = UserRateLimiter(cache=cache, rate_per_min=6, burst=2, clock=lambda: clock[0])
    assert [await limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert await limiter.allow("b")
    clock[0] = 10.0  # 6 per minute: one token back after 10 s
    assert await limiter.allow("a")
    assert not await limiter.allow("a")
    assert set(cache.buckets) == {"user:a", "user:b"}
    assert limiter.limited == 2


@pytest.mark.anyio
async def test_limiter_keeps_limiting_in_process_when_the_cache_is_down() -> None:
    cache = _BucketCache()
    cache.down = True
    limiter = UserRateLimiter(cache=cache, rate_per_min=6, burst=3, clock=lambda: 0.0)
    assert [await limiter.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert await limiter.allow("b")
    assert limiter.fallbacks == 6
