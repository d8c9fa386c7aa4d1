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
    AuditEntry,
    AuditRow,
    Channel,
    ConversationRow,
    Direction,
    HandoffRow,
    HandoffState,
    HandoffView,
    HistoryEntry,
    IdentityRow,
    Inbound,
    InboundKind,
    Interaction,
    OutboxRow,
    ServiceType,
    UserView,
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
        reply_to=r["reply_to"],
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
        handoff_id=r["handoff_id"],
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


HANDOFF_VIEW = """
SELECT h.handoff_id, h.conversation_id, c.user_id, h.user_key, u.display_name, h.state,
       h.reason, h.urgent, h.opened_at, h.assigned_to, h.assigned_at, h.closed_at, h.closed_by,
       (SELECT max(m.message_id) FROM messages AS m
        WHERE m.conversation_id = h.conversation_id) AS last_message_id,
       (SELECT m.created_at FROM messages AS m WHERE m.conversation_id = h.conversation_id
        ORDER BY m.message_id DESC LIMIT 1) AS last_message_at
FROM handoffs AS h
JOIN conversations AS c ON c.conversation_id = h.conversation_id
JOIN users AS u ON u.user_id = c.user_id
"""
"""What both backends read for a ``HandoffView``; each adds its WHERE, ORDER BY and LIMIT."""

AUDIT_COLUMNS = "actor, role, action, target, via, detail, correlation_id, at"


def handoff_view(r: Any, instant: Instant = as_datetime) -> HandoffView:
    return HandoffView(
        handoff_id=r["handoff_id"],
        conversation_id=r["conversation_id"],
        user_id=r["user_id"],
        user_key=r["user_key"],
        display_name=r["display_name"],
        state=HandoffState(r["state"]),
        reason=r["reason"],
        urgent=bool(r["urgent"]),
        opened_at=instant(r["opened_at"]),
        claimed_by=r["assigned_to"],
        claimed_at=_maybe(r["assigned_at"], instant),
        closed_at=_maybe(r["closed_at"], instant),
        closed_by=r["closed_by"],
        last_message_id=r["last_message_id"],
        last_message_at=_maybe(r["last_message_at"], instant),
    )


def history_entry(r: Any, instant: Instant = as_datetime) -> HistoryEntry:
    return HistoryEntry(
        message_id=r["message_id"],
        direction=Direction(r["direction"]),
        text=r["text"],
        author=r["author"],
        service_type=ServiceType(r["service_type"]),
        created_at=instant(r["created_at"]),
    )


def user_view(r: Any, identities: list[Any], instant: Instant = as_datetime) -> UserView:
    return UserView(
        user_id=r["user_id"],
        display_name=r["display_name"],
        unreachable=bool(r["unreachable"]),
        created_at=instant(r["created_at"]),
        forgotten_at=_maybe(r["forgotten_at"], instant),
        identities=tuple(
            IdentityRow(
                channel=i["channel"], user_key=i["user_key"], created_at=instant(i["created_at"])
            )
            for i in identities
        ),
        conversation_id=r["conversation_id"],
        active_handoff_id=r["active_handoff_id"],
    )


def audit_values(e: AuditEntry, stored: Callable[[datetime], Any] = as_datetime) -> tuple[Any, ...]:
    """Values in the order of ``AUDIT_COLUMNS``."""
    return (
        e.actor,
        e.role,
        e.action,
        e.target,
        e.via,
        e.detail,
        e.correlation_id,
        stored(e.at),
    )


def audit_row(r: Any, instant: Instant = as_datetime) -> AuditRow:
    return AuditRow(
        audit_id=r["audit_id"],
        actor=r["actor"],
        role=r["role"],
        action=r["action"],
        target=r["target"],
        via=r["via"],
        detail=r["detail"],
        correlation_id=r["correlation_id"],
        at=instant(r["at"]),
    )


@attrs.frozen(kw_only=True)
class Opening:
    """One ``open_conversation`` call waiting in a backend's batch."""

    channel: Channel
    user_key: str
    display_name: str | None
    pending_limit: int
    recent_limit: int
