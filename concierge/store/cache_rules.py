"""What both session caches agree on: argument checks and the token-bucket rule.

``refill_and_take`` is the one token-bucket rule: the memory cache applies it, the
Redis script does the same arithmetic server-side, and the rate limiter's in-process
fallback applies it too.
"""

from __future__ import annotations

import math

import attrs

# A bucket left alone this long past a full refill would read full anyway: its key can go.
BUCKET_TTL_MARGIN_S = 60.0


# -- validation shared by both backends -------------------------------------------------
def check_ttl(ttl_s: float) -> float:
    if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"ttl_s must be a finite number of seconds above 0, got {ttl_s!r}")
    return float(ttl_s)


def check_max_turns(max_turns: int) -> int:
    if not isinstance(max_turns, int) or max_turns < 0:
        raise ValueError(f"max_turns must be a whole number of at least 0, got {max_turns!r}")
    return max_turns


def check_bucket(rate_per_s: float, burst: int, now: float) -> None:
    if not (isinstance(rate_per_s, int | float) and math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a finite number above 0, got {rate_per_s!r}")
    if not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be a whole number of at least 1, got {burst!r}")
    if not (isinstance(now, int | float) and math.isfinite(now)):
        raise ValueError(f"now must be a finite number of seconds, got {now!r}")


def bucket_ttl_s(rate_per_s: float, burst: int) -> float:
    """How long a bucket's state matters: the time to refill from empty, plus a margin."""
    return burst / rate_per_s + BUCKET_TTL_MARGIN_S


# -- the token bucket ---------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class BucketState:
    tokens: float
    updated_at: float


def refill_and_take(
    state: BucketState | None, *, now: float, rate_per_s: float, burst: int
) -> tuple[bool, BucketState]:
    """Refill for the time since the last call, then take one token if a whole one is there.

    A missing state is a full bucket. A ``now`` earlier than the last call (another
    process's clock) refills nothing and becomes the new reference point, so tokens
    never go negative and never exceed ``burst``.
    """
    if state is None:
        tokens = float(burst)
    else:
        elapsed = max(0.0, now - state.updated_at)
        tokens = min(float(burst), state.tokens + elapsed * rate_per_s)
    granted = tokens >= 1.0
    if granted:
        tokens -= 1.0
    return granted, BucketState(tokens=tokens, updated_at=now)
