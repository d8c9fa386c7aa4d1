"""Records from database rows, shared by both durable backends.

A pending inbox row comes back as the very ``Inbound`` that ingest hands the router,
so a replayed message needs no further conversion. The backends agree on column
names; they differ only in how an instant comes back (PostgreSQL: a ``datetime``;
SQLite: ISO text), so each passes ``instant``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from concierge.protocol import (
    Channel,
    ConversationRow,
    HandoffRow,
    HandoffState,
    Inbound,
    InboundKind,
    Interaction,
    OutboxRow,
    ServiceType,
)

Instant = Callable[[Any], datetime]


def as_datetime(value: Any) -> datetime:
    """PostgreSQL's driver already gives ``datetime``s."""
    return value  # type: ignore[no-any-return]


def _maybe(value: Any, instant: Instant) -> datetime | None:
    return None if value is None else instant(value)


def inbox_row(r: Any, instant: Instant = as_datetime) -> Inbound:
    return Inbound(
        inbox_id=r["inbox_id"],
        correlation_id=r["correlation_id"],
        channel=Channel(r["channel"]),
        user_key=r["user_key"],
        chat_id=r["chat_id"],
        external_id=r["external_id"],
        text=r["text"],
        kind=InboundKind(r["kind"]),
        received_at=instant(r["received_at"]),
        display_name=r["display_name"],
        language_hint=r["language_hint"],
    )


def outbox_row(r: Any, instant: Instant = as_datetime) -> OutboxRow:
    return OutboxRow(
        outbox_id=r["outbox_id"],
        correlation_id=r["correlation_id"],
        channel=Channel(r["channel"]),
        user_key=r["user_key"],
        chat_id=r["chat_id"],
        text=r["text"],
        inbox_id=r["inbox_id"],
        attempts=r["attempts"],
        created_at=instant(r["created_at"]),
        next_attempt_at=instant(r["next_attempt_at"]),
        last_error=r["last_error"],
    )


MAKE_URGENT = (
    "DO UPDATE SET correlation_id = CASE WHEN excluded.urgent AND NOT handoffs.urgent "
    "THEN excluded.correlation_id ELSE handoffs.correlation_id END, "
    "urgent = handoffs.urgent OR excluded.urgent"
)
"""How both backends' ``open_handoff`` meets the handoff already open: an urgent request
makes it urgent and gives it this message's correlation id; anything else leaves it be."""


def handoff_row(r: Any, instant: Instant = as_datetime) -> HandoffRow:
    return HandoffRow(
        handoff_id=r["handoff_id"],
        conversation_id=r["conversation_id"],
        user_key=r["user_key"],
        state=HandoffState(r["state"]),
        reason=r["reason"],
        correlation_id=r["correlation_id"],
        opened_at=instant(r["opened_at"]),
        closed_at=_maybe(r["closed_at"], instant),
        closed_by=r["closed_by"],
        urgent=bool(r["urgent"]),
    )


def conversation_row(r: Any, instant: Instant = as_datetime) -> ConversationRow:
    return ConversationRow(
        conversation_id=r["conversation_id"],
        user_id=r["user_id"],
        service_type=ServiceType(r["service_type"]),
        handoff_open=bool(r["handoff_open"]),
        updated_at=instant(r["updated_at"]),
    )


def interaction_values(
    i: Interaction, stored: Callable[[datetime], Any] = as_datetime
) -> tuple[Any, ...]:
    """Column values in the order both backends' INSERT statements name them."""
    return (
        i.correlation_id,
        i.conversation_id,
        i.provider,
        i.model,
        i.key_alias,
        i.latency_s,
        i.tokens_in,
        i.tokens_out,
        i.outcome,
        i.service_type.value,
        stored(i.created_at),
    )


@attrs.frozen(kw_only=True)
class Opening:
    """One ``open_conversation`` call waiting in a backend's batch."""

    channel: Channel
    user_key: str
    display_name: str | None
    pending_limit: int
    recent_limit: int
