"""Exponential backoff with jitter between restarts (OTP has none; Akka and stamina do)."""

from __future__ import annotations

import random

import attrs

_MAX_EXPONENT = 63
"""2**63 times any sane ``initial_s`` is past any sane ``max_s``; it also keeps floats finite."""


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"Backoff.{attribute.name} must be >= 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    """``min(max_s, initial_s * 2**(n-1) + uniform(0, jitter_s))`` before the n-th restart.

    ``n`` counts consecutive restarts of one child; it starts again at 1 once the child
    has stayed up for the supervisor's ``reset_after_s``. The jitter keeps siblings that
    failed together from coming back in lockstep.
    """

    initial_s: float = attrs.field(default=0.5, validator=_non_negative)
    max_s: float = attrs.field(default=30.0, validator=_non_negative)
    jitter_s: float = attrs.field(default=0.1, validator=_non_negative)

    def delay(self, n: int, rng: random.Random) -> float:
        """Seconds to wait before the ``n``-th consecutive restart (``n >= 1``)."""
        if n < 1:
            raise ValueError(f"restart number n must be >= 1, got {n!r}")
        grown = self.initial_s * 2.0 ** min(n - 1, _MAX_EXPONENT)
        jitter = rng.uniform(0.0, self.jitter_s) if self.jitter_s else 0.0
        return min(self.max_s, grown + jitter)
