"""Per-key state of one provider and its round-robin rotation.

A key is enabled, cooling (throttled: skipped until the server's hint, or an
exponential 1→60 s backoff with jitter when it gave none) or disabled (dead:
401/402/403, no credit left, or an operator took it out of rotation; only an
operator brings such a key back). Each key is assumed to be its own quota
domain: configure one key per account/project, since extra keys on one
account add no capacity.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import attrs
import structlog
import trio

from concierge.settings import ApiKey

log = structlog.get_logger(__name__)

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
HINT_MAX_S = 3600.0
"""A retry hint is believed up to an hour (daily quotas say more; the next poll or call tells)."""


class KeyState(enum.IntEnum):
    """Values double as the Prometheus gauge (0 enabled, 1 cooling, 2 disabled)."""

    ENABLED = 0
    COOLING = 1
    DISABLED = 2


@attrs.define(kw_only=True)
class KeySlot:
    """Mutable state of one key; only its ``KeyRing`` changes it."""

    key: ApiKey
    disabled_reason: str | None = None
    disabled_by: str | None = None
    """The operator who disabled the key (``None``: the pool did, on a dead-key answer)."""
    cooling_until: float | None = None
    throttle_streak: int = 0
    successes: int = 0
    failures: int = 0
    last_error: str | None = None

    def state(self, now: float) -> KeyState:
        if self.disabled_reason is not None:
            return KeyState.DISABLED
        if self.cooling_until is not None and now < self.cooling_until:
            return KeyState.COOLING
        return KeyState.ENABLED


@attrs.frozen(kw_only=True)
class KeySnapshot:
    alias: str
    state: KeyState
    disabled_reason: str | None
    disabled_by: str | None
    cooling_for_s: float | None
    successes: int
    failures: int
    last_error: str | None


class KeyRing:
    """The keys of one provider, handed out round-robin among the usable ones."""

    def __init__(
        self,
        provider: str,
        keys: tuple[ApiKey, ...],
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        if not keys:
            raise ValueError(f"provider {provider!r} has no API keys")
        self.provider = provider
        self.slots = tuple(KeySlot(key=k) for k in keys)
        self._clock = clock
        self._rng = rng or random.Random()
        self._next = 0

    def state_of(self, slot: KeySlot) -> KeyState:
        return slot.state(self._clock())

    def has_usable(self) -> bool:
        now = self._clock()
        return any(s.state(now) is KeyState.ENABLED for s in self.slots)

    def take(self) -> KeySlot | None:
        """The next enabled key after the last one handed out, or ``None``."""
        now = self._clock()
        count = len(self.slots)
        for step in range(count):
            slot = self.slots[(self._next + step) % count]
            if slot.state(now) is KeyState.ENABLED:
                self._next = (self._next + step + 1) % count
                return slot
        return None

    def next_ready_at(self) -> float | None:
        """When the first cooling key becomes usable (``None``: no key is merely cooling)."""
        now = self._clock()
        times = [
            s.cooling_until
            for s in self.slots
            if s.state(now) is KeyState.COOLING and s.cooling_until is not None
        ]
        return min(times) if times else None

    def slot(self, alias: str) -> KeySlot:
        for s in self.slots:
            if s.key.alias == alias:
                return s
        raise KeyError(f"provider {self.provider!r} has no key {alias!r}")

    # -- verdicts --------------------------------------------------------------------
    def succeeded(self, slot: KeySlot) -> None:
        slot.successes += 1
        slot.throttle_streak = 0

    def failed(self, slot: KeySlot, detail: str) -> None:
        """A failure that says nothing about the key (transient, bad request)."""
        slot.failures += 1
        slot.last_error = detail

    def disable(self, slot: KeySlot, reason: str, *, correlation_id: str = "") -> None:
        """Take the key out of rotation until re-enabled; logged once per disabling."""
        slot.failures += 1
        slot.last_error = reason
        if slot.disabled_reason is None:
            log.warning(
                "provider.key_disabled",
                provider=self.provider,
                key=slot.key.alias,
                reason=reason,
                correlation_id=correlation_id,
            )
        slot.disabled_reason = reason

    def enable(self, slot: KeySlot, *, reason: str, correlation_id: str = "") -> None:
        if slot.disabled_reason is not None:
            log.info(
                "provider.key_reenabled",
                provider=self.provider,
                key=slot.key.alias,
                reason=reason,
                correlation_id=correlation_id,
            )
        slot.disabled_reason = None
        slot.disabled_by = None

    def set_by_operator(self, alias: str, *, enabled: bool, by: str, reason: str = "") -> KeySlot:
        """An operator takes the key out of rotation (until they bring it back) or back in.

        Raises ``KeyError`` for an alias the provider does not have.
        """
        slot = self.slot(alias)
        if enabled:
            self.enable(slot, reason=f"enabled by {by}")
        else:
            slot.disabled_reason = None  # logged as the operator's, not as a dead key's
            self.disable(slot, reason or f"disabled by {by}")
            slot.disabled_by = by
        return slot

    def cool(
        self, slot: KeySlot, retry_after_s: float | None, *, correlation_id: str = ""
    ) -> float:
        """Skip the key until the hint (or a jittered exponential backoff) passes; returns the wait."""
        slot.failures += 1
        slot.throttle_streak += 1
        if retry_after_s is not None and retry_after_s > 0:
            wait = min(retry_after_s, HINT_MAX_S)
            slot.last_error = f"throttled, retry after {wait:g} s"
        else:
            base = min(BACKOFF_INITIAL_S * 2 ** (slot.throttle_streak - 1), BACKOFF_MAX_S)
            wait = base * self._rng.uniform(0.5, 1.0)
            slot.last_error = "throttled"
        slot.cooling_until = self._clock() + wait
        log.info(
            "provider.key_throttled",
            provider=self.provider,
            key=slot.key.alias,
            cooling_s=round(wait, 3),
            hinted=retry_after_s is not None,
            correlation_id=correlation_id,
        )
        return wait

    def snapshot(self) -> tuple[KeySnapshot, ...]:
        now = self._clock()
        return tuple(
            KeySnapshot(
                alias=s.key.alias,
                state=s.state(now),
                disabled_reason=s.disabled_reason,
                disabled_by=s.disabled_by,
                cooling_for_s=(s.cooling_until - now)
                if s.state(now) is KeyState.COOLING and s.cooling_until
                else None,
                successes=s.successes,
                failures=s.failures,
                last_error=s.last_error,
            )
            for s in self.slots
        )
