"""What changes when several replicas share one PostgreSQL database, in one place.

With SQLite (one process) nothing does: singletons run as they are and conversations
take no lease. On PostgreSQL, singletons (the Telegram poller, the handoff sweeper,
retention) run under an advisory-lock election, conversations under leases, and an
inbox listener wakes a person's lease holder when another replica accepts their rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import structlog

from actors import ConversationLeases, ElectionStats, LeaseStats, run_elected
from concierge.settings import StoreSettings
from concierge.store import SharedStore, Store, shared

log = structlog.get_logger(__name__)

Start = Callable[..., Awaitable[Any]]


@attrs.define(kw_only=True)
class Replicas:
    """This replica's part in a shared database (``shared`` is ``None`` with SQLite)."""

    shared: SharedStore | None
    elections: ElectionStats = attrs.field(factory=ElectionStats)
    leases: ConversationLeases | None = None

    @classmethod
    def of(cls, store: Store, settings: StoreSettings) -> Replicas:
        db = shared(store)
        if db is None:
            return cls(shared=None)
        leases = ConversationLeases(db, ttl_s=settings.lease_ttl_s, stats=LeaseStats())
        return cls(shared=db, leases=leases)

    def elect(self, name: str, start: Start) -> Start:
        """``start`` as a singleton: run only while this replica leads ``name``."""
        if self.shared is None:
            return start
        return partial(
            run_elected, name=name, sessions=self.shared, start=start, stats=self.elections
        )

    async def release(self) -> None:
        """The drain's release hook: the leases go once the turns in flight are done."""
        await self.release_leases()

    async def release_claims(self) -> None:
        """The drain's last hook: once this replica's senders stopped, the outbox rows they
        claimed and did not send go to another replica now, not after the claim expires."""
        if self.shared is None:
            return
        released = await self.shared.release_outbox_claims()
        log.info("outbox.claims_released", rows=released)

    async def release_leases(self) -> int:
        """Let every conversation lease of this replica go now (a stop): other replicas
        take those people over at once instead of after the lease's expiry."""
        if self.leases is None:
            return 0
        return await self.leases.release_all()
