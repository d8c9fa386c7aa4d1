"""Human handoff: closing one with word to the user, and counting those still open.

While a handoff is open the conversation actor stays silent (it still records
messages) and forwards what the user writes to the staff chat (``staff_notices``).
``close_handoff`` is what staff call (the operator API, the staff chat, ``concierge
handoff close``); the sweeper closes handoffs nobody took up within
``CONCIERGE_HANDOFF_TIMEOUT_S``. Either way the user is told, in the language of their
last messages. An urgent handoff (a person in distress) is never closed by the
timeout: only staff close it, and ``/health`` warns while one is open (``OpenHandoffs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog
import trio
from prometheus_client.core import GaugeMetricFamily, Metric

from concierge.domain.language import Languages
from concierge.domain.nudges import nudge_outbox
from concierge.domain.replies import Reply
from concierge.domain.staff_notices import StaffChat, staff_closed
from concierge.observability import Check, Status
from concierge.protocol import (
    Channel,
    HandoffRow,
    OutboundReply,
    OutboxMsg,
    Role,
    new_correlation_id,
    utcnow,
)
from concierge.store import Conversations, Handoffs, Identities, Outbox

log = structlog.get_logger(__name__)


class HandoffDesk(Identities, Conversations, Handoffs, Outbox, Protocol):
    """What closing a handoff needs: find it by user, close it, tell the user in their language."""


def chat_of(user_key: str) -> tuple[Channel, str] | None:
    """The channel and chat id a user key addresses (``telegram:111`` → telegram, ``111``).

    Private chats use the user's own id as chat id on every channel, which is the
    only kind of chat a handoff is opened for.
    """
    prefix, sep, chat_id = user_key.partition(":")
    if not sep or not chat_id:
        return None
    try:
        return Channel(prefix), chat_id
    except ValueError:
        return None


async def user_language(store: Conversations, languages: Languages, conversation_id: int) -> str:
    """The language of the user's last messages."""
    turns = await store.recent_turns(conversation_id, limit=6)
    text = " ".join(t.text for t in turns if t.role is Role.USER)
    return languages.detect(text)


async def open_handoffs(store: Handoffs) -> Sequence[HandoffRow]:
    """Every open handoff, oldest first (opened before a day from now: all of them)."""
    return await store.handoffs_opened_before(utcnow() + timedelta(days=1))


class OpenHandoffs:
    """The handoffs waiting for a person, as last counted from the store.

    ``/health`` warns while an urgent one is open (``handoffs:urgentOpen``). The
    sweeper counts at every pass; a conversation that opens an urgent handoff
    ``poke``s it to count at once rather than at the next pass.
    """

    def __init__(self) -> None:
        self.open = 0
        self.urgent = 0
        self._poked = trio.Event()

    def poke(self) -> None:
        self._poked.set()

    async def wait_poke(self, timeout_s: float) -> None:
        """Return when poked (or poked since the last wait), or after ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            await self._poked.wait()
        self._poked = trio.Event()

    async def count(self, store: Handoffs) -> None:
        rows = await open_handoffs(store)
        self.open = len(rows)
        self.urgent = sum(1 for row in rows if row.urgent)

    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="handoffs",
            measurement="urgentOpen",
            status=Status.WARN if self.urgent else Status.PASS,
            observed_value=self.urgent,
            observed_unit="urgent handoffs open",
            output=(
                f"{self.urgent} urgent handoff(s) wait for a person: a person in distress "
                "(see the staff chat, or concierge handoff list)"
                if self.urgent
                else None
            ),
            details={"open": self.open},
        )

    def metrics(self) -> Iterable[Metric]:
        urgent = GaugeMetricFamily(
            "concierge_urgent_handoffs_open", "Urgent handoffs (a person in distress) open"
        )
        urgent.add_metric([], self.urgent)
        yield urgent
        total = GaugeMetricFamily("concierge_handoffs_open", "Handoffs open, urgent or not")
        total.add_metric([], self.open)
        yield total


async def _find_open(
    store: HandoffDesk, *, handoff_id: int | None, user_key: str | None
) -> HandoffRow | None:
    if user_key is not None:
        user = await store.user_for_key(user_key)
        if user is None:
            return None
        conversation = await store.conversation_for(user.user_id)
        row = await store.active_handoff(conversation.conversation_id)
        if row is None or (handoff_id is not None and row.handoff_id != handoff_id):
            return None
        return row
    for row in await open_handoffs(store):
        if row.handoff_id == handoff_id:
            return row
    return None


async def close_handoff(
    store: HandoffDesk,
    *,
    languages: Languages,
    by: str,
    handoff_id: int | None = None,
    user_key: str | None = None,
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]] | None = None,
    reply: Reply = Reply.HANDOFF_CLOSED,
    staff: StaffChat | None = None,
) -> HandoffRow | None:
    """Close an open handoff (by id or by user) and tell the user the concierge answers again.

    ``by`` names who closed it (a staff member, or ``timeout``); with ``staff``, the
    staff chat is told too. Returns the row that was closed, or ``None`` when no such
    handoff was open (or someone else closed it first: only one of them tells the user).
    """
    if handoff_id is None and user_key is None:
        raise ValueError("close_handoff needs a handoff_id or a user_key")
    row = await _find_open(store, handoff_id=handoff_id, user_key=user_key)
    if row is None or not await store.close_handoff(row.handoff_id, closed_by=by):
        return None
    if staff is not None:
        await store.enqueue_reply(staff_closed(staff, languages, row, by=by))
        nudge_outbox(outbox_nudges, staff.channel, row.correlation_id)
    log.info(
        "handoff.closed",
        handoff_id=row.handoff_id,
        conversation_id=row.conversation_id,
        closed_by=by,
        reason=reply.value,
    )
    address = chat_of(row.user_key)
    if address is None:
        log.warning(
            "handoff.user_not_told",
            handoff_id=row.handoff_id,
            reason="no chat address in the user key",
        )
        return row
    channel, chat_id = address
    correlation_id = new_correlation_id()
    language = await user_language(store, languages, row.conversation_id)
    await store.enqueue_reply(
        OutboundReply(
            correlation_id=correlation_id,
            channel=channel,
            user_key=row.user_key,
            chat_id=chat_id,
            text=languages.reply(reply, language),
        )
    )
    nudge_outbox(outbox_nudges, channel, correlation_id)
    return row


async def sweep_handoffs(
    store: HandoffDesk,
    *,
    languages: Languages,
    timeout_s: float,
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]] | None = None,
    now: datetime | None = None,
    staff: StaffChat | None = None,
) -> int:
    """Close every handoff open for longer than ``timeout_s``, urgent ones aside; return how many.

    A person in distress waits for a person however long it takes: ``/health`` warns.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_s)
    closed = 0
    for row in await store.handoffs_opened_before(cutoff):
        if row.urgent:
            continue
        if await close_handoff(
            store,
            languages=languages,
            by="timeout",
            handoff_id=row.handoff_id,
            user_key=row.user_key,
            outbox_nudges=outbox_nudges,
            reply=Reply.HANDOFF_TIMEOUT,
            staff=staff,
        ):
            closed += 1
    return closed
