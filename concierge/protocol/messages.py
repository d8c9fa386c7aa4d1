"""Every message that crosses an actor boundary, in one place.

Messages are frozen, keyword-only, slotted attrs classes with immutable payloads
(tuples, not lists). Each carries the ``correlation_id`` minted at ingress so that
logs, outbound API calls and the interaction record can be joined on it. Each actor
has one inbox type, an alias at the bottom of this module.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

import attrs
import trio

from concierge.protocol.convert import converter


def new_correlation_id() -> str:
    """A short random id: unique enough to join logs, short enough to read."""
    return uuid.uuid4().hex[:16]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Channel(enum.StrEnum):
    """Where a user reaches the concierge (and where a reply goes back)."""

    TELEGRAM = "telegram"
    WAHA = "waha"
    CONSOLE = "console"


class ServiceType(enum.StrEnum):
    """What a message asks for; decides the prompt and whether a person takes over."""

    RENSEIGNEMENT = "RENSEIGNEMENT"
    CATECHESE = "CATECHESE"
    CONTACT_HUMAIN = "CONTACT_HUMAIN"


class InboundKind(enum.StrEnum):
    """What an accepted update carries; only ``TEXT`` and ``COMMAND`` reach a provider.

    ``STAFF`` is a message from the configured staff chat: the staff desk handles it,
    never a conversation.
    """

    TEXT = "text"
    COMMAND = "command"
    MEDIA = "media"
    STAFF = "staff"


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class Outcome(enum.StrEnum):
    """The one classification every provider failure is reduced to.

    It decides the state change: ``REQUEST_ERROR`` is not the provider's fault,
    ``DEAD_KEY`` disables a key, ``THROTTLED`` cools a key down until the server's
    hint, ``TRANSIENT`` feeds the provider's circuit breaker.
    """

    OK = "ok"
    REQUEST_ERROR = "request_error"
    DEAD_KEY = "dead_key"
    THROTTLED = "throttled"
    TRANSIENT = "transient"


@attrs.frozen(kw_only=True)
class Turn:
    """One exchange in a conversation's context window."""

    role: Role
    text: str


@attrs.frozen(kw_only=True)
class InboundMessage:
    """A user's message as a channel parsed it, before the durable inbox has it.

    ``user_key`` is channel-scoped (``telegram:111111111``, ``waha:221770000000@c.us``);
    ``chat_id`` is what the channel needs to answer; ``external_id`` is the
    platform's message id, the dedupe key.
    """

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
    reply_to: str | None = None
    """The platform id of the message this one answers (a staff reply to a handoff notice)."""


@attrs.frozen(kw_only=True)
class Inbound(InboundMessage):
    """A user's message committed to the durable inbox: ``inbox_id`` is its row.

    What ingest hands the router and what the store reads back for a row still pending.
    """

    inbox_id: int

    @staticmethod
    def committed(message: InboundMessage, *, inbox_id: int) -> Inbound:
        return _committed(message, inbox_id=inbox_id)


_committed = converter(InboundMessage, Inbound, "inbox_id")


@attrs.frozen(kw_only=True)
class ProviderCall:
    """What one provider is asked: the prompt, the reply's size and the time it may take.

    ``query`` is the user's latest text, which the offline provider matches against
    the knowledge base; ``language`` is ``fr`` or ``en``.
    """

    correlation_id: str
    system: str
    turns: tuple[Turn, ...]
    max_tokens: int
    timeout_s: float
    query: str = ""
    language: str = "fr"
    service_type: ServiceType = ServiceType.RENSEIGNEMENT


@attrs.frozen(kw_only=True)
class ProviderReply:
    """What one provider answered to a ``ProviderCall``."""

    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0


@attrs.frozen(kw_only=True)
class Completion:
    """A provider's answer, with what the interaction record needs."""

    correlation_id: str
    text: str
    provider: str
    model: str
    key_alias: str
    latency_s: float
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 1

    @staticmethod
    def answered(
        reply: ProviderReply,
        *,
        correlation_id: str,
        provider: str,
        key_alias: str,
        latency_s: float,
        attempts: int,
    ) -> Completion:
        """What the pool answers when ``provider`` gave ``reply``."""
        return _answered(
            reply,
            correlation_id=correlation_id,
            provider=provider,
            key_alias=key_alias,
            latency_s=latency_s,
            attempts=attempts,
        )


_answered = converter(
    ProviderReply, Completion, "correlation_id", "provider", "key_alias", "latency_s", "attempts"
)


@attrs.frozen(kw_only=True)
class AttemptFailure:
    """Why one attempt within a turn failed (kept for the record and the logs)."""

    provider: str
    key_alias: str
    outcome: Outcome
    detail: str


@attrs.frozen(kw_only=True)
class CompletionFailed:
    """No provider could answer within the turn's deadline: the caller must handle it."""

    correlation_id: str
    reason: str
    failures: tuple[AttemptFailure, ...] = ()


CompletionResult = Completion | CompletionFailed


@attrs.frozen(kw_only=True)
class CompletionRequest:
    """Ask the provider pool for one reply to ``call``.

    ``call.timeout_s`` is the turn's whole budget, covering every attempt; each attempt
    gets the same call with its own share of that budget. The pool answers exactly once
    on ``reply_to`` (a channel of size 1) and closes it. ``network`` false (a person
    past their daily token budget) lets only the offline provider answer: no network
    provider is called.
    """

    call: ProviderCall
    reply_to: trio.MemorySendChannel[CompletionResult]
    network: bool = True


@attrs.frozen(kw_only=True)
class OutboxNudge:
    """Tell a channel's sender that the durable outbox has new rows.

    A hint only: the sender also polls, so a dropped nudge delays but never loses.
    """

    channel: Channel
    correlation_id: str = ""


@attrs.frozen(kw_only=True)
class InboxWake:
    """Tell the conversation holding a person's lease that their inbox has new rows.

    Sent when another replica accepted a row: the actor reads the person's pending
    rows from the store, in inbox order, and answers those it has not.
    """

    user_key: str


@attrs.frozen(kw_only=True)
class _Presence:
    """Where a turn's "typing..." shows: the chat of the message being answered."""

    channel: Channel
    chat_id: str
    correlation_id: str


@attrs.frozen(kw_only=True)
class TurnStarted(_Presence):
    """A conversation began working on a message (channels show "typing...")."""

    @staticmethod
    def of(message: InboundMessage) -> TurnStarted:
        return _started(message)


@attrs.frozen(kw_only=True)
class TurnEnded(_Presence):
    """The conversation finished (or abandoned) the turn ``TurnStarted`` announced."""

    @staticmethod
    def of(message: InboundMessage) -> TurnEnded:
        return _ended(message)


_started = converter(InboundMessage, TurnStarted)
_ended = converter(InboundMessage, TurnEnded)


@attrs.frozen(kw_only=True)
class TurnCompleted:
    """A turn's outcome, for observers such as ``concierge chat --json``.

    ``reply`` is what went to the outbox (empty when the turn stayed silent, e.g. during a
    handoff); ``provider`` is ``""`` when no provider was asked (commands, limits, handoff).
    """

    correlation_id: str
    user_key: str
    inbox_id: int
    reply: str
    service_type: ServiceType
    provider: str
    latency_s: float


# One inbox type per actor, named for it: a message it learns to take joins its union here.
RouterMsg = Inbound
ConversationMsg = Inbound | InboxWake
StaffDeskMsg = Inbound
ProviderPoolMsg = CompletionRequest
OutboxMsg = OutboxNudge
PresenceMsg = TurnStarted | TurnEnded
