"""Credit monitoring for providers that report a key's balance (OpenRouter ``GET /api/v1/key``).

Every key of such a provider is polled every ``credit_poll_s`` and right after a
dead-key answer (402) from it. A key with nothing left leaves rotation; a
periodic poll that shows credit (or no limit) brings any disabled key back: the
poll itself authenticates the key, so a key it can read is usable. A poll
triggered by a dead-key answer never re-enables (that would flap at the rate of
requests when the account, not the key, is out of credit), and neither does a poll
bring back a key an operator disabled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol

import attrs
import structlog
import trio

from concierge.protocol import utcnow
from concierge.providers.keys import KeyRing, KeySlot, KeyState
from concierge.settings import ApiKey

log = structlog.get_logger(__name__)

POLL_TIMEOUT_S = 10.0
NO_CREDIT = "no credit left"


class CreditInfo(Protocol):
    """What a key-info endpoint says: ``None`` limit/remaining means unlimited."""

    @property
    def limit(self) -> float | None: ...

    @property
    def remaining(self) -> float | None: ...

    @property
    def usage(self) -> float: ...


CreditFetch = Callable[[ApiKey], Awaitable[CreditInfo]]


@attrs.frozen(kw_only=True)
class CreditReading:
    """The last poll of one key (``error`` set when the last poll failed)."""

    limit: float | None = None
    remaining: float | None = None
    usage: float | None = None
    checked_at: datetime | None = None
    error: str | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


class CreditMonitor:
    def __init__(
        self,
        *,
        rings: Mapping[str, KeyRing],
        fetchers: Mapping[str, CreditFetch],
        poll_s: float,
        timeout_s: float = POLL_TIMEOUT_S,
    ) -> None:
        unknown = set(fetchers) - set(rings)
        if unknown:
            raise ValueError(f"credit fetchers for unknown providers: {', '.join(sorted(unknown))}")
        self._rings = rings
        self._fetchers = dict(fetchers)
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._readings: dict[tuple[str, str], CreditReading] = {}
        self._wake_send, self._wake_recv = trio.open_memory_channel[str](max(1, len(fetchers)))
        self._pending: set[str] = set()

    def reading(self, provider: str, alias: str) -> CreditReading | None:
        return self._readings.get((provider, alias))

    def poll_soon(self, provider: str) -> None:
        """Ask for an out-of-turn poll of ``provider`` (a no-op for providers without credits)."""
        if provider not in self._fetchers or provider in self._pending:
            return
        try:
            self._wake_send.send_nowait(provider)
            self._pending.add(provider)
        except trio.WouldBlock:
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll periodically and on demand until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._periodic)
            nursery.start_soon(self._on_demand)
            task_status.started()

    async def _periodic(self) -> None:
        while True:
            for provider in self._fetchers:
                await self.poll(provider, periodic=True)
            await trio.sleep(self._poll_s)

    async def _on_demand(self) -> None:
        async for provider in self._wake_recv:
            self._pending.discard(provider)
            await self.poll(provider, periodic=False)

    async def poll(self, provider: str, *, periodic: bool) -> None:
        ring = self._rings[provider]
        fetch = self._fetchers[provider]
        for slot in ring.slots:
            await self._poll_key(provider, ring, slot, fetch, periodic=periodic)

    async def _poll_key(
        self, provider: str, ring: KeyRing, slot: KeySlot, fetch: CreditFetch, *, periodic: bool
    ) -> None:
        alias = slot.key.alias
        previous = self._readings.get((provider, alias), CreditReading())
        info: CreditInfo | None = None
        error: str | None = None
        with trio.move_on_after(self._timeout_s):
            try:
                info = await fetch(slot.key)
            except Exception as exc:  # any failure of the poll is reported, never fatal
                error = f"{type(exc).__name__}: {exc}"
        if info is None:
            error = error or f"no answer within {self._timeout_s:g} s"
            self._readings[(provider, alias)] = attrs.evolve(previous, error=error)
            log.warning("provider.credit_poll_failed", provider=provider, key=alias, error=error)
            return
        reading = CreditReading(
            limit=info.limit,
            remaining=info.remaining,
            usage=info.usage,
            checked_at=utcnow(),
        )
        self._readings[(provider, alias)] = reading
        state = ring.state_of(slot)
        if reading.exhausted:
            if state is not KeyState.DISABLED:
                log.warning(
                    "provider.credit_exhausted",
                    provider=provider,
                    key=alias,
                    remaining=reading.remaining,
                )
                ring.disable(slot, NO_CREDIT)
        elif periodic and state is KeyState.DISABLED and slot.disabled_by is None:
            log.info(
                "provider.credit_restored",
                provider=provider,
                key=alias,
                remaining=reading.remaining,
            )
            ring.enable(slot, reason="credit available")
