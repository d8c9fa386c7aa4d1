"""The one way a platform message enters: commit to the durable inbox, then hand to the router.

Webhook handlers and pollers call ``Ingest.accept``; it returns only after the
inbox row is committed (or raises ``StoreUnavailable``: answer 503, commit
nothing). Forwarding to the router is bounded: a message that cannot be handed
over in time stays an unprocessed inbox row, which the replayer picks up, so an
ack never waits on a slow conversation and a crash never loses a message. With a
``Admission``, a row is forwarded only when admission lets it in, and never waited
for: a saturated daemon leaves new rows in the durable inbox, not in memory, and
the inbox drain hands them over as turns end.
"""

from __future__ import annotations

import structlog
import trio

from concierge.domain.admission import Admission
from concierge.protocol import Accepted, AcceptStatus, Inbound, InboundMessage, RouterMsg
from concierge.store import Inbox

log = structlog.get_logger(__name__)


class Ingest:
    def __init__(
        self,
        *,
        store: Inbox,
        router: trio.MemorySendChannel[RouterMsg],
        forward_timeout_s: float = 2.0,
        admission: Admission | None = None,
    ) -> None:
        self._store = store
        self._router = router
        self._forward_timeout_s = forward_timeout_s
        self._admission = admission
        self.accepted = 0
        self.duplicates = 0

    async def accept(self, message: InboundMessage) -> Accepted:
        """Commit ``message``; forward it to the router if it is new."""
        accepted = await self._store.accept(message)
        if accepted.status is AcceptStatus.ERASED:
            log.info(
                "ingest.erased_ignored",
                correlation_id=message.correlation_id,
                channel=message.channel.value,
            )
            return accepted
        if not accepted.is_new:
            self.duplicates += 1
            log.info(
                "ingest.duplicate_ignored",
                correlation_id=message.correlation_id,
                channel=message.channel.value,
                external_id=message.external_id,
            )
            return accepted
        self.accepted += 1
        admission = self._admission
        if admission is not None:
            self._admit(admission, Inbound.committed(message, inbox_id=accepted.inbox_id))
            return accepted
        if await self._forward(Inbound.committed(message, inbox_id=accepted.inbox_id)):
            return accepted
        log.warning(
            "ingest.forward_deferred",
            correlation_id=message.correlation_id,
            inbox_id=accepted.inbox_id,
        )
        return accepted

    def _admit(self, admission: Admission, inbound: Inbound) -> None:
        """Forward ``inbound`` if admission lets it in and the router has room; never wait.

        While rows wait in the inbox, a new row waits behind them: the drain hands them
        over oldest first, so no user's later message overtakes an earlier one.
        """
        if admission.deferred or not admission.admit(inbound.inbox_id):
            if not admission.holds(inbound.inbox_id):  # the drain may have taken it already
                admission.defer()
            return
        try:
            self._router.send_nowait(inbound)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            admission.release(inbound.inbox_id)
            admission.defer()

    async def _forward(self, inbound: Inbound) -> bool:
        """Hand ``inbound`` to the router within ``forward_timeout_s``; False if it did not go."""
        try:
            # The store call was the checkpoint: a router with room takes it at once.
            self._router.send_nowait(inbound)
            return True
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # shutting down: the row replays at the next start
        with trio.move_on_after(self._forward_timeout_s):
            try:
                await self._router.send(inbound)
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return False
