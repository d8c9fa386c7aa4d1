"""The operator API's request and response bodies: pydantic models the OpenAPI document is made from.

pydantic because quart-schema builds the document and validates requests from it
(attrs classes, used everywhere else, it cannot read). Each ``of`` builds a response
from the store's record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from concierge.protocol import (
    AuditRow,
    HandoffView,
    HistoryEntry,
    UserView,
    utcnow,
)
from concierge.providers import KeyStatistics, ProviderStatistics

MAX_ID = 10**18 - 1
"""The largest row id a path or a page bound takes (ids are 64-bit; 18 digits at most)."""
MAX_REPLY_CHARS = 4000


BLANKS = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
"""White space as JSON Schema patterns (ECMA-262 ``\\s``) see it, as a character class's
content, so that the document and the check agree on what a blank text is."""
NOT_BLANK = f"[^{BLANKS}]"
_BLANK_CHARS = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _printable(text: str) -> str:
    """What a person typed, storable and sendable: NUL and lone surrogates replaced, trimmed."""
    cleaned = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned.strip(_BLANK_CHARS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- requests ---------------------------------------------------------------------------------
class HandoffQuery(_Model):
    state: Literal["active", "closed"] = Field(
        "active", description="active (open or claimed, urgent first, oldest first) or closed"
    )
    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, le=MAX_ID, description="only handoffs below this id")


class PageQuery(_Model):
    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, le=MAX_ID, description="only items below this id")


class DetailQuery(_Model):
    messages: int = Field(50, ge=0, le=200, description="how many of the newest messages")


class ClaimQuery(_Model):
    take_over: bool = Field(False, description="claim it even if someone else did")


class LookupQuery(_Model):
    identity: str = Field(
        ...,
        min_length=3,
        max_length=200,
        description="a channel identity, e.g. telegram:111111111 or waha:33612345678@c.us",
    )


class LinkBody(_Model):
    user_id: int = Field(..., ge=1, description="the person to merge with this one")


class UnlinkBody(_Model):
    identity: str = Field(
        ...,
        min_length=3,
        max_length=200,
        description="the identity whose channel leaves the person, e.g. telegram:111111111",
    )


class ReplyBody(_Model):
    text: str = Field(..., min_length=1, max_length=MAX_REPLY_CHARS, pattern=NOT_BLANK)

    _clean = field_validator("text")(lambda value: _printable(value))


class DisableBody(_Model):
    reason: str = Field(..., min_length=1, max_length=200, pattern=NOT_BLANK)

    _clean = field_validator("reason")(lambda value: _printable(value))


# -- responses --------------------------------------------------------------------------------
class Me(_Model):
    subject: str
    role: Literal["staff", "admin"]
    expires_at: datetime


class Handoff(_Model):
    """A handoff as staff see it. ``urgent`` ones are answered first (none is set yet)."""

    id: int
    user_id: int
    channel: str
    user_key: str
    display_name: str | None
    state: Literal["open", "assigned", "closed"]
    reason: str
    urgent: bool
    opened_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    last_message_id: int | None
    last_message_at: datetime | None

    @classmethod
    def of(cls, view: HandoffView) -> Handoff:
        return cls(
            id=view.handoff_id,
            user_id=view.user_id,
            channel=view.user_key.partition(":")[0],
            user_key=view.user_key,
            display_name=view.display_name,
            state=view.state.value,
            reason=view.reason,
            urgent=view.urgent,
            opened_at=view.opened_at,
            claimed_by=view.claimed_by,
            claimed_at=view.claimed_at,
            closed_at=view.closed_at,
            closed_by=view.closed_by,
            last_message_id=view.last_message_id,
            last_message_at=view.last_message_at,
        )


class HandoffList(_Model):
    handoffs: list[Handoff]


class Message(_Model):
    """``from``: the user, the concierge, or ``staff`` (then ``author`` names who)."""

    id: int
    sender: Literal["user", "concierge", "staff"]
    author: str | None
    text: str
    service_type: str
    created_at: datetime

    @classmethod
    def of(cls, entry: HistoryEntry) -> Message:
        sender: Literal["user", "concierge", "staff"] = (
            "user"
            if entry.direction.value == "inbound"
            else ("staff" if entry.author else "concierge")
        )
        return cls(
            id=entry.message_id,
            sender=sender,
            author=entry.author,
            text=entry.text,
            service_type=entry.service_type.value,
            created_at=entry.created_at,
        )


class MessagePage(_Model):
    """Oldest first; ``next_before`` pages back to older messages (``null``: no more)."""

    messages: list[Message]
    next_before: int | None

    @classmethod
    def of(cls, entries: list[HistoryEntry], *, limit: int) -> MessagePage:
        full = len(entries) == limit and entries
        return cls(
            messages=[Message.of(e) for e in entries],
            next_before=entries[0].message_id if full else None,
        )


class HandoffDetail(_Model):
    handoff: Handoff
    messages: list[Message]


class Identity(_Model):
    channel: str
    user_key: str
    linked_at: datetime


class User(_Model):
    id: int
    display_name: str | None
    unreachable: bool
    created_at: datetime
    forgotten_at: datetime | None
    identities: list[Identity]
    active_handoff_id: int | None

    @classmethod
    def of(cls, view: UserView) -> User:
        return cls(
            id=view.user_id,
            display_name=view.display_name,
            unreachable=view.unreachable,
            created_at=view.created_at,
            forgotten_at=view.forgotten_at,
            identities=[
                Identity(channel=i.channel, user_key=i.user_key, linked_at=i.created_at)
                for i in view.identities
            ],
            active_handoff_id=view.active_handoff_id,
        )


class Erased(_Model):
    user_id: int
    rows: int


class Key(_Model):
    """One API key: ``state`` enabled, cooling (throttled) or disabled, and why."""

    provider: str
    alias: str
    state: Literal["enabled", "cooling", "disabled"]
    disabled_reason: str | None
    disabled_by: str | None
    cooling_until: datetime | None
    successes: int
    failures: int
    last_error: str | None
    credit_remaining: float | None
    credit_limit: float | None
    credit_checked_at: datetime | None

    @classmethod
    def of(cls, provider: str, key: KeyStatistics) -> Key:
        credit = key.credit
        cooling = key.cooling_for_s
        return cls(
            provider=provider,
            alias=key.alias,
            state=key.state.name.lower(),  # type: ignore[arg-type]
            disabled_reason=key.disabled_reason,
            disabled_by=key.disabled_by,
            cooling_until=utcnow() + timedelta(seconds=cooling) if cooling else None,
            successes=key.successes,
            failures=key.failures,
            last_error=key.last_error,
            credit_remaining=credit.remaining if credit else None,
            credit_limit=credit.limit if credit else None,
            credit_checked_at=credit.checked_at if credit else None,
        )


class Provider(_Model):
    """A provider's circuit breaker (closed, half-open or open) and its keys."""

    name: str
    kind: str
    model: str
    breaker: Literal["closed", "half-open", "open"]
    keys: list[Key]

    @classmethod
    def of(cls, stats: ProviderStatistics) -> Provider:
        return cls(
            name=stats.name,
            kind=stats.kind,
            model=stats.model,
            breaker=stats.breaker.state.label,  # type: ignore[arg-type]
            keys=[Key.of(stats.name, k) for k in stats.keys],
        )


class ProviderList(_Model):
    providers: list[Provider]


class AuditEntry(_Model):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    via: str
    detail: str

    @classmethod
    def of(cls, row: AuditRow) -> AuditEntry:
        return cls(
            id=row.audit_id,
            at=row.at,
            actor=row.actor,
            role=row.role,
            action=row.action,
            target=row.target,
            via=row.via,
            detail=row.detail,
        )


class AuditPage(_Model):
    """Newest first; ``next_before`` pages back (``null``: no more)."""

    entries: list[AuditEntry]
    next_before: int | None


class Problem(_Model):
    """RFC 9457 problem details: every error of the API has this shape."""

    type: str
    title: str
    status: int
    detail: str | None = None
