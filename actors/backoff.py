"""Exponential backoff with jitter, for actors that retry a call to a platform."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, initial_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): doubling from ``initial_s`` up to
    ``max_s``, plus up to 10 % jitter so that retries of many rows do not line up."""
    base: float = min(max_s, initial_s * 2.0 ** min(max(0, attempt - 1), 40))
    return base * (1.0 + 0.1 * random.random())
