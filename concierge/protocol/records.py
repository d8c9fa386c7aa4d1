"""The records the durable store reads and writes: the same types on both sides of it.

Instants are timezone-aware UTC ``datetime``s; payloads are immutable.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from concierge.protocol.messages import Channel, InboundKind, ServiceType, Turn


class AcceptStatus(enum.StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class HandoffState(enum.StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    CLOSED = "closed"


@attrs.frozen(kw_only=True)
class NewInbound:
    """A normalised platform message, before it has an inbox row."""

    correlation_id: str
    channel: Channel
    user_key: str
    chat_id: str
    external_id: str
    text: str
    kind: InboundKind = InboundKind.TEXT
    received_at: datetime
    display_name: str | None = None
    language_hint: str | None = None


@attrs.frozen(kw_only=True)
class Accepted:
    """What ``Store.accept`` decided; ``inbox_id`` is the existing row on a duplicate."""

    status: AcceptStatus
    inbox_id: int

    @property
    def is_new(self) -> bool:
        return self.status is AcceptStatus.NEW


@attrs.frozen(kw_only=True)
class InboxRow:
    inbox_id: int
    correlation_id: str
    channel: Channel
    user_key: str
    chat_id: str
    external_id: str
    text: str
    kind: InboundKind
    received_at: datetime
    display_name: str | None = None
    language_hint: str | None = None
    processed_at: datetime | None = None


@attrs.frozen(kw_only=True)
class NewOutbound:
    """A reply to write to the outbox before anything is sent."""

    correlation_id: str
    channel: Channel
    user_key: str
    chat_id: str
    text: str
    inbox_id: int | None = None


@attrs.frozen(kw_only=True)
class OutboxRow:
    outbox_id: int
    correlation_id: str
    channel: Channel
    user_key: str
    chat_id: str
    text: str
    inbox_id: int | None
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class UserRow:
    user_id: int
    display_name: str | None
    unreachable: bool
    created_at: datetime


@attrs.frozen(kw_only=True)
class ConversationRow:
    conversation_id: int
    user_id: int
    service_type: ServiceType
    handoff_open: bool
    updated_at: datetime


@attrs.frozen(kw_only=True)
class Interaction:
    """One provider call made for a turn: metadata that outlives message texts."""

    correlation_id: str
    conversation_id: int
    provider: str
    model: str
    key_alias: str
    latency_s: float
    tokens_in: int
    tokens_out: int
    outcome: str
    service_type: ServiceType
    created_at: datetime


@attrs.frozen(kw_only=True)
class HandoffRow:
    handoff_id: int
    conversation_id: int
    user_key: str
    state: HandoffState
    reason: str
    correlation_id: str
    opened_at: datetime
    assigned_to: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None


@attrs.frozen(kw_only=True)
class TurnRecord:
    """Everything one handled inbox row writes, committed together by ``Store.complete_turn``.

    One transaction, so a crash leaves either all of it or none of it: a replayed
    row is answered again only if its reply was never written.
    """

    inbox_id: int
    conversation_id: int | None
    """Needed when messages, an interaction or a conversation type are recorded."""
    correlation_id: str
    service_type: ServiceType | None
    """Stored on the inbox row (``None`` keeps what it has) and on the messages."""
    inbound_text: str | None = None
    """The user's message to record as an INBOUND message; ``None`` records none."""
    outbound_text: str | None = None
    """The reply to record as an OUTBOUND message; ``None`` records none."""
    replies: tuple[NewOutbound, ...] = ()
    """Outbox rows, written in this order."""
    interaction: Interaction | None = None
    conversation_type: ServiceType | None = None
    """Set on the conversation when not ``None``."""

    def __attrs_post_init__(self) -> None:
        records = (
            self.inbound_text is not None
            or self.outbound_text is not None
            or self.interaction is not None
            or self.conversation_type is not None
        )
        if records and self.conversation_id is None:
            raise ValueError(
                f"TurnRecord for inbox row {self.inbox_id}: conversation_id is None but the turn "
                "records messages, an interaction or a conversation type"
            )
        if (self.inbound_text is not None or self.outbound_text is not None) and (
            self.service_type is None
        ):
            raise ValueError(
                f"TurnRecord for inbox row {self.inbox_id}: recording messages needs a service_type"
            )


@attrs.frozen(kw_only=True)
class ConversationStart:
    """What a conversation actor reads when it starts, from one ``Store.open_conversation``."""

    user_id: int
    conversation: ConversationRow
    handoff: HandoffRow | None
    """The conversation's open or assigned handoff, if any."""
    pending: tuple[InboxRow, ...]
    """The user's unprocessed inbox rows in arrival order, as ``pending_inbox(user_key=...)``."""
    recent: tuple[Turn, ...]
    """The conversation's last recorded messages, oldest first, as ``recent_turns``."""
