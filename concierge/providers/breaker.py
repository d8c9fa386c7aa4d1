"""A per-provider circuit breaker: closed → open → half-open with exactly one probe.

Written here rather than taken from pybreaker/aiobreaker: those let every call
through in half-open, count only consecutive failures, and assume threads or
asyncio. Only transient failures (5xx, overload, timeouts, connection errors)
are recorded as failures; the pool never reports throttling, dead keys or bad
requests here. Time comes from an injected clock (``trio.current_time``), so
tests run on trio's MockClock.

Calls are admitted with ``acquire`` which returns a ``Ticket``; its result is
reported once with ``succeeded``, ``failed`` or ``released`` (no verdict). A
ticket issued before the breaker last opened is stale: its result changes
nothing, so a slow call admitted while closed cannot close a half-open breaker.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable

import attrs
import structlog
import trio

from concierge.settings import BreakerSettings

log = structlog.get_logger(__name__)

JITTER = 0.1
"""Open durations are stretched by up to this fraction, so providers do not recover in step."""


class BreakerState(enum.IntEnum):
    """Values double as the Prometheus gauge (0 closed, 1 half-open, 2 open)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@attrs.frozen(kw_only=True)
class Ticket:
    """Permission for one call; ``probe`` marks the single half-open trial."""

    generation: int
    probe: bool = False


@attrs.frozen(kw_only=True)
class BreakerSnapshot:
    state: BreakerState
    openings: int
    """Consecutive openings since the breaker was last closed (drives the open time)."""
    total_openings: int
    open_until: float | None
    opened_at: float | None
    window_failures: int
    window_calls: int
    consecutive_failures: int
    probe_in_flight: bool


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = BreakerState.CLOSED
        self._window: deque[bool] = deque(maxlen=settings.window)  # True = failure
        self._consecutive = 0
        self._openings = 0
        self._total_openings = 0
        self._open_until: float | None = None
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self._generation = 0

    # -- reading ---------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose time is up reads as half-open."""
        if (
            self._state is BreakerState.OPEN
            and self._open_until is not None
            and self._clock() >= self._open_until
        ):
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def opened_at(self) -> float | None:
        return self._opened_at

    @property
    def open_until(self) -> float | None:
        return self._open_until if self._state is BreakerState.OPEN else None

    def would_admit(self) -> bool:
        """Whether ``acquire`` would succeed now (without taking the probe)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probe_in_flight
        )

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            state=self.state,
            openings=self._openings,
            total_openings=self._total_openings,
            open_until=self.open_until,
            opened_at=self._opened_at,
            window_failures=sum(self._window),
            window_calls=len(self._window),
            consecutive_failures=self._consecutive,
            probe_in_flight=self._probe_in_flight,
        )

    # -- admitting -------------------------------------------------------------------
    def acquire(self, *, correlation_id: str = "") -> Ticket | None:
        """A ticket if a call may go to this provider now, else ``None``."""
        self._maybe_half_open(correlation_id)
        if self._state is BreakerState.CLOSED:
            return Ticket(generation=self._generation)
        if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Ticket(generation=self._generation, probe=True)
        return None

    def force_probe(
        self, *, correlation_id: str = "", reason: str = "every provider is open"
    ) -> Ticket | None:
        """Let one call through an open breaker before its time (when nothing else can answer)."""
        if self._state is BreakerState.OPEN and not self._probe_in_flight:
            self._to_half_open(correlation_id, reason=reason)
        return self.acquire(correlation_id=correlation_id)

    # -- verdicts --------------------------------------------------------------------
    def succeeded(self, ticket: Ticket, *, correlation_id: str = "") -> None:
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            self._probe_in_flight = False
            self._close(correlation_id)
            return
        if self._state is BreakerState.CLOSED:
            self._window.append(False)
            self._consecutive = 0

    def failed(self, ticket: Ticket, *, correlation_id: str = "", reason: str = "") -> None:
        """Record a transient failure (never call this for 429/402/401/400)."""
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            self._probe_in_flight = False
            self._open(
                correlation_id, reason=f"probe failed: {reason}" if reason else "probe failed"
            )
            return
        if self._state is not BreakerState.CLOSED:
            return
        self._window.append(True)
        self._consecutive += 1
        s = self._settings
        failures = sum(self._window)
        if self._consecutive >= s.consecutive:
            self._open(correlation_id, reason=f"{self._consecutive} consecutive transient failures")
        elif len(self._window) >= s.min_calls and failures / len(self._window) >= s.failure_rate:
            self._open(
                correlation_id, reason=f"{failures} of the last {len(self._window)} calls failed"
            )

    def released(self, ticket: Ticket) -> None:
        """The call ended without a verdict on the provider's health (throttled, dead key, bad request, cancelled)."""
        if ticket.probe and ticket.generation == self._generation:
            self._probe_in_flight = False

    # -- transitions -------------------------------------------------------------------
    def _maybe_half_open(self, correlation_id: str) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._open_until is not None
            and self._clock() >= self._open_until
        ):
            self._to_half_open(correlation_id, reason="open time elapsed")

    def _to_half_open(self, correlation_id: str, *, reason: str) -> None:
        self._state = BreakerState.HALF_OPEN
        self._probe_in_flight = False
        log.info(
            "provider.breaker_half_open",
            provider=self.name,
            correlation_id=correlation_id,
            reason=reason,
        )

    def _open(self, correlation_id: str, *, reason: str) -> None:
        s = self._settings
        self._openings += 1
        self._total_openings += 1
        base = min(s.open_s * self._openings, s.open_max_s)
        duration = base * (1.0 + self._rng.uniform(0.0, JITTER))
        now = self._clock()
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._open_until = now + duration
        self._generation += 1
        self._probe_in_flight = False
        self._window.clear()
        self._consecutive = 0
        log.warning(
            "provider.breaker_opened",
            provider=self.name,
            correlation_id=correlation_id,
            reason=reason,
            open_s=round(duration, 3),
            openings=self._openings,
        )

    def _close(self, correlation_id: str) -> None:
        self._state = BreakerState.CLOSED
        self._openings = 0
        self._open_until = None
        self._generation += 1
        self._window.clear()
        self._consecutive = 0
        log.info("provider.breaker_closed", provider=self.name, correlation_id=correlation_id)
