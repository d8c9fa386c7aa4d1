"""The records the durable store reads and writes: the same types on both sides of it.

Instants are timezone-aware UTC ``datetime``s; payloads are immutable.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date, datetime

import attrs

from concierge.protocol.convert import converter
from concierge.protocol.messages import (
    Channel,
    Completion,
    CompletionFailed,
    Inbound,
    ServiceType,
    Turn,
    utcnow,
)


class AcceptStatus(enum.StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    ERASED = "erased"
    """A delivery of a message its user had erased: acknowledged, never stored again."""


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class HandoffState(enum.StrEnum):
    """``ASSIGNED``: a staff member claimed it; it is still active, like ``OPEN``."""

    OPEN = "open"
    ASSIGNED = "assigned"
    CLOSED = "closed"


@attrs.frozen(kw_only=True)
class Accepted:
    """What ``Inbox.accept`` decided; ``inbox_id`` is the existing row on a duplicate."""

    status: AcceptStatus
    inbox_id: int

    @property
    def is_new(self) -> bool:
        return self.status is AcceptStatus.NEW


@attrs.frozen(kw_only=True)
class Erased:
    """What ``Store.forget_user`` did: rows touched and the identities it removed."""

    rows: int
    user_keys: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ErasureNotice:
    """A forgotten identity, as its keyed hash, for every process to drop what it holds."""

    erasure_id: int
    user_digest: str


@attrs.frozen(kw_only=True)
class OutboundReply:
    """A message to send, as written to the outbox before anything is sent.

    ``inbox_id`` is the message it answers (``None`` for one nobody asked for, such as
    a staff notification or a handoff's end).
    """

    correlation_id: str
    channel: Channel
    user_key: str
    chat_id: str
    text: str
    inbox_id: int | None = None
    handoff_id: int | None = None
    """For a message to the staff chat, the handoff it is about: a staff reply to it answers it."""

    @staticmethod
    def answering(message: Inbound, *, text: str) -> OutboundReply:
        """The reply ``text`` to ``message``, in its chat."""
        return _answering(message, text=text)


_answering = converter(Inbound, OutboundReply, "text")


@attrs.frozen(kw_only=True)
class OutboxRow(OutboundReply):
    """An unsent outbox row, with the bookkeeping of its attempts so far.

    ``last_error`` also carries a sender's progress through a reply sent in parts.
    """

    outbox_id: int
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
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

    @staticmethod
    def of(
        result: Completion | CompletionFailed,
        *,
        conversation_id: int,
        outcome: str,
        service_type: ServiceType,
    ) -> Interaction:
        """The record of a turn's provider call; ``outcome`` says what became of it.

        An answer carries its provider, model, key, latency and tokens; a turn no
        provider answered records the last provider and key tried, if any.
        """
        if isinstance(result, Completion):
            return _answered(
                result,
                conversation_id=conversation_id,
                outcome=outcome,
                service_type=service_type,
                created_at=utcnow(),
            )
        last = result.failures[-1] if result.failures else None
        return _unanswered(
            result,
            conversation_id=conversation_id,
            provider=last.provider if last else "",
            model="",
            key_alias=last.key_alias if last else "",
            latency_s=0.0,
            tokens_in=0,
            tokens_out=0,
            outcome=outcome,
            service_type=service_type,
            created_at=utcnow(),
        )


_INTERACTION = ("conversation_id", "outcome", "service_type", "created_at")
_answered = converter(Completion, Interaction, *_INTERACTION)
_unanswered = converter(
    CompletionFailed,
    Interaction,
    *_INTERACTION,
    "provider",
    "model",
    "key_alias",
    "latency_s",
    "tokens_in",
    "tokens_out",
)


@attrs.frozen(kw_only=True)
class DailyUsage:
    """Tokens (in and out) the providers reported for one UTC day, per person and per provider."""

    day: date
    users: Mapping[int, int]
    """user id -> tokens."""
    providers: Mapping[str, int]
    """provider name -> tokens."""


@attrs.frozen(kw_only=True)
class HandoffRow:
    """A person taking a conversation over.

    ``correlation_id`` is the message that opened it, or that made it ``urgent`` (a
    person in distress): replayed after a crash, that message finishes what it started.
    """

    handoff_id: int
    conversation_id: int
    user_key: str
    state: HandoffState
    reason: str
    correlation_id: str
    opened_at: datetime
    closed_at: datetime | None = None
    closed_by: str | None = None
    urgent: bool = False


@attrs.frozen(kw_only=True)
class TurnRecord:
    """Everything one handled inbox row writes, committed together by ``Turns.complete_turn``.

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
    replies: tuple[OutboundReply, ...] = ()
    """Outbox rows, written in this order."""
    interaction: Interaction | None = None
    conversation_type: ServiceType | None = None
    """Set on the conversation when not ``None``."""
    lease_key: str | None = None
    """The conversation lease the turn ran under (PostgreSQL replicas); ``None``: no lease."""
    lease_epoch: int | None = None
    """That lease's fencing epoch: the database refuses the commit once it moved on."""

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
    """What a conversation actor reads when it starts, from one ``Conversations.open_conversation``."""

    user_id: int
    conversation: ConversationRow
    handoff: HandoffRow | None
    """The conversation's open handoff, if any."""
    pending: tuple[Inbound, ...]
    """The user's unprocessed inbox rows in arrival order, as ``pending_inbox(user_key=...)``."""
    recent: tuple[Turn, ...]
    """The conversation's last recorded messages, oldest first, as ``recent_turns``."""


@attrs.frozen(kw_only=True)
class HandoffView:
    """A handoff as staff see it: who asked and where, who took it, and the last activity.

    ``urgent`` is reserved for handoffs that must be answered first (none is set yet).
    """

    handoff_id: int
    conversation_id: int
    user_id: int
    user_key: str
    display_name: str | None
    state: HandoffState
    reason: str
    urgent: bool
    opened_at: datetime
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    last_message_id: int | None = None
    last_message_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state is not HandoffState.CLOSED


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One recorded message of a conversation; ``author`` names the staff member of a staff reply."""

    message_id: int
    direction: Direction
    text: str
    author: str | None
    service_type: ServiceType
    created_at: datetime


@attrs.frozen(kw_only=True)
class IdentityRow:
    channel: str
    user_key: str
    created_at: datetime


@attrs.frozen(kw_only=True)
class UserView:
    """A user with every channel identity that reaches them (empty once forgotten)."""

    user_id: int
    display_name: str | None
    unreachable: bool
    created_at: datetime
    forgotten_at: datetime | None
    identities: tuple[IdentityRow, ...]
    conversation_id: int | None
    active_handoff_id: int | None


@attrs.frozen(kw_only=True)
class StaffReply:
    """A staff member's answer to a handed-off user, written at once by ``OperatorQueries``.

    ``text`` is what the staff member wrote (recorded in the conversation as theirs);
    ``reply`` is the outbox row that carries it to the user. ``inbox_id`` is the staff
    chat message it settles (``None`` from the API): a replayed one writes nothing.
    """

    handoff_id: int
    author: str
    text: str
    reply: OutboundReply
    inbox_id: int | None = None


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One operator action: who (``actor`` and ``role``), what, on whom (``target``), how."""

    actor: str
    role: str
    action: str
    target: str
    via: str
    detail: str = ""
    correlation_id: str = ""
    at: datetime = attrs.field(factory=utcnow)


@attrs.frozen(kw_only=True)
class AuditRow(AuditEntry):
    audit_id: int
