"""Conversation leases held by this replica: taken when an actor starts, renewed while it runs.

With several replicas on one PostgreSQL database, a person's turns run on the replica
holding their lease. A lease not renewed expires after ``ttl_s`` (its holder died) and
another replica takes it, with a higher epoch; the database refuses a turn committed
under the old one (``StaleLease``). Renewal runs every third of the TTL, so a holder
that is alive never loses its lease to expiry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, Metric

from concierge.observability import Check, Status
from concierge.store import Leases, StoreError

log = structlog.get_logger(__name__)

RELEASE_TIMEOUT_S = 2.0
PREDECESSOR_POLL_S = 0.1


@attrs.define(kw_only=True)
class LeaseStats:
    """What ``/metrics`` shows of this replica's leases."""

    acquired: int = 0
    held_elsewhere: int = 0
    lost: int = 0
    stale_refused: int = 0
    """Turns whose commit the database refused: their lease's epoch had moved on."""
    released: int = 0

    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="conversations",
            measurement="stale_lease_refusals",
            status=Status.PASS,
            observed_value=self.stale_refused,
            observed_unit="commits",
        )

    def metrics(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "concierge_conversation_leases",
            "Conversation leases by what happened to them",
            labels=["event"],
        )
        events.add_metric(["acquired"], self.acquired)
        events.add_metric(["held_elsewhere"], self.held_elsewhere)
        events.add_metric(["lost"], self.lost)
        events.add_metric(["released"], self.released)
        yield events
        yield CounterMetricFamily(
            "concierge_stale_lease_refusals",
            "Turn commits the database refused because their lease epoch had moved on",
            value=self.stale_refused,
        )


@attrs.define(kw_only=True)
class Lease:
    """A lease this replica holds: what every commit under it carries."""

    key: str
    epoch: int
    lost: bool = False


class ConversationLeases:
    """Takes, renews and lets go of this replica's conversation leases."""

    def __init__(self, store: Leases, *, ttl_s: float, stats: LeaseStats | None = None) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self.stats = stats if stats is not None else LeaseStats()
        self.held: dict[str, Lease] = {}
        self.closed = False
        """Set once every lease was let go: none is taken or renewed again."""

    @asynccontextmanager
    async def holding(self, key: str, *, user_key: str) -> AsyncIterator[Lease | None]:
        """The lease on ``key`` for the block, or ``None`` when another replica holds it.

        Losing it (a renewal refused) cancels the block and sets ``lost``; it is let go
        on the way out (bounded, shielded), and every replica is told when rows wait.
        """
        epoch = (
            None
            if self.closed
            else await self._store.acquire_lease(key, user_key=user_key, ttl_s=self.ttl_s)
        )
        if epoch is None:
            self.stats.held_elsewhere += 1
            log.debug("conversation.lease_held_elsewhere", lease_key=key)
            yield None
            return
        lease = self.held[key] = Lease(key=key, epoch=epoch)
        self.stats.acquired += 1
        single: BaseException | None = None
        try:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._renew, lease, nursery.cancel_scope)
                    yield lease
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The block's own failure comes out as itself, as it would without a lease.
                if len(group.exceptions) != 1:
                    raise
                single = group.exceptions[0]
            if single is not None:
                raise single
        finally:
            if self.held.get(key) is lease:
                del self.held[key]
            if not lease.lost:
                await self._release(lease)

    async def wait_for_others(
        self, key: str, user_keys: Sequence[str], *, timeout_s: float
    ) -> bool:
        """Wait (at most ``timeout_s``) until no replica holds a lease of ``user_keys`` under
        another key: a link or an unlink made elsewhere re-keyed the person while an actor of
        an old key ran; it retires there and lets its lease go. ``False`` when one had not
        (or the store could not say): the turns go on, each commit still fenced."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    if not await self._store.other_leases(key, user_keys):
                        return True
                except StoreError as exc:
                    log.warning("conversation.predecessors_unknown", error=str(exc))
                    return False
                await trio.sleep(PREDECESSOR_POLL_S)
        log.warning("conversation.predecessors_still_held", waited_s=timeout_s)
        return False

    async def _renew(self, lease: Lease, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.ttl_s / 3)
            if self.closed:
                return
            try:
                with trio.fail_after(self.ttl_s / 3):
                    kept = await self._store.renew_lease(lease.key, lease.epoch, ttl_s=self.ttl_s)
            except (StoreError, trio.TooSlowError) as exc:
                # Not lost yet: the commit's fence decides if it expires meanwhile.
                log.warning(
                    "conversation.lease_renewal_failed", lease_key=lease.key, error=str(exc)
                )
                continue
            if not kept:
                lease.lost = True
                self.stats.lost += 1
                log.warning("conversation.lease_lost", lease_key=lease.key, epoch=lease.epoch)
                scope.cancel()
                return

    async def _release(self, lease: Lease) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
            try:
                await self._store.release_lease(lease.key, lease.epoch)
                self.stats.released += 1
            except StoreError as exc:  # it expires by itself
                log.warning(
                    "conversation.lease_release_failed", lease_key=lease.key, error=str(exc)
                )

    async def release_all(self) -> int:
        """Let every lease of this replica go at once (a replica stopping): other replicas
        take those people over now, not after the TTL. Turns still running here keep
        their epoch, so they commit unless another replica took over first."""
        self.closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
            try:
                released = await self._store.release_leases()
            except StoreError as exc:  # they expire by themselves
                log.warning("conversation.leases_release_failed", error=str(exc))
                return 0
            self.stats.released += released
            log.info("conversation.leases_released", leases=released)
            return released
        return 0
