"""The staff desk's statements on SQLite: handoffs as staff see them, staff replies, audit.

Each function runs inside the caller's worker-thread call (writes inside its
``BEGIN IMMEDIATE`` transaction), like ``sqlite_per_item``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from concierge.protocol import (
    AuditEntry,
    AuditRow,
    Channel,
    Direction,
    HandoffView,
    HistoryEntry,
    ServiceType,
    StaffReply,
    UserView,
)
from concierge.store.rows import AUDIT_COLUMNS, HANDOFF_VIEW
from concierge.store.sqlite_driver import (
    audit_row,
    audit_values,
    handoff_view as _handoff_view,
    history_entry,
    user_view as _user_view,
)
from concierge.store.sqlite_per_item import INSERT_OUTBOX, outbox_values

_NO_BOUND = 2**63 - 1


def mark_sent(
    conn: sqlite3.Connection, outbox_id: int, message_ids: Sequence[str], now: str
) -> None:
    conn.execute(
        "UPDATE outbox SET sent_at = coalesce(sent_at, ?), attempts = attempts + 1 "
        "WHERE outbox_id = ?",
        (now, outbox_id),
    )
    if message_ids:
        conn.execute(
            "INSERT INTO staff_messages (channel, chat_id, message_id, handoff_id, created_at) "
            "SELECT o.channel, o.chat_id, j.value, o.handoff_id, ? "
            "FROM outbox AS o, json_each(?) AS j "
            "WHERE o.outbox_id = ? AND o.handoff_id IS NOT NULL "
            "ON CONFLICT DO NOTHING",
            (now, json.dumps(list(message_ids)), outbox_id),
        )


def list_handoffs(
    conn: sqlite3.Connection, *, active: bool, limit: int, before: int | None
) -> list[HandoffView]:
    if active:
        where, order = "h.state <> 'closed'", "h.urgent DESC, h.handoff_id"
    else:
        where, order = "h.state = 'closed'", "h.handoff_id DESC"
    rows = conn.execute(
        f"{HANDOFF_VIEW} WHERE {where} AND h.handoff_id < ? ORDER BY {order} LIMIT ?",
        (_NO_BOUND if before is None else before, limit),
    )
    return [_handoff_view(r) for r in rows]


def handoff_view(conn: sqlite3.Connection, handoff_id: int) -> HandoffView | None:
    r = conn.execute(f"{HANDOFF_VIEW} WHERE h.handoff_id = ?", (handoff_id,)).fetchone()
    return None if r is None else _handoff_view(r)


def claim_handoff(
    conn: sqlite3.Connection, handoff_id: int, by: str, take_over: bool, now: str
) -> None:
    conn.execute(
        "UPDATE handoffs SET state = 'assigned', assigned_to = ?, assigned_at = ? "
        "WHERE handoff_id = ? AND (state = 'open' OR (state = 'assigned' AND ?))",
        (by, now, handoff_id, int(take_over)),
    )


def record_staff_reply(conn: sqlite3.Connection, reply: StaffReply, now: str) -> int | None:
    handoff = conn.execute(
        "SELECT conversation_id FROM handoffs WHERE handoff_id = ? AND state <> 'closed'",
        (reply.handoff_id,),
    ).fetchone()
    if handoff is None:
        return None
    if reply.inbox_id is not None:
        claimed = conn.execute(
            "UPDATE inbox SET processed_at = ? WHERE inbox_id = ? AND processed_at IS NULL "
            "RETURNING inbox_id",
            (now, reply.inbox_id),
        ).fetchone()
        if claimed is None:
            return None
    conversation_id = int(handoff[0])
    conn.execute(
        "INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id, "
        "author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            conversation_id,
            Direction.OUTBOUND.value,
            reply.text,
            ServiceType.CONTACT_HUMAIN.value,
            reply.reply.correlation_id,
            reply.author,
            now,
        ),
    )
    outbox_id = int(conn.execute(INSERT_OUTBOX, outbox_values(reply.reply, now)).fetchone()[0])
    conn.execute(
        "UPDATE handoffs SET state = 'assigned', assigned_to = ?, assigned_at = ? "
        "WHERE handoff_id = ? AND state = 'open'",
        (reply.author, now, reply.handoff_id),
    )
    conn.execute(
        "UPDATE conversations SET updated_at = ? WHERE conversation_id = ?",
        (now, conversation_id),
    )
    return outbox_id


def history(
    conn: sqlite3.Connection, conversation_id: int, *, limit: int, before: int | None
) -> list[HistoryEntry]:
    rows = conn.execute(
        "SELECT message_id, direction, text, author, service_type, created_at FROM messages "
        "WHERE conversation_id = ? AND message_id < ? ORDER BY message_id DESC LIMIT ?",
        (conversation_id, _NO_BOUND if before is None else before, limit),
    ).fetchall()
    return [history_entry(r) for r in reversed(rows)]


def user_view(conn: sqlite3.Connection, user_id: int) -> UserView | None:
    r = conn.execute(
        "SELECT u.*, c.conversation_id, "
        "(SELECT h.handoff_id FROM handoffs AS h WHERE h.conversation_id = c.conversation_id "
        " AND h.state <> 'closed') AS active_handoff_id "
        "FROM users AS u LEFT JOIN conversations AS c ON c.user_id = u.user_id "
        "WHERE u.user_id = ?",
        (user_id,),
    ).fetchone()
    if r is None:
        return None
    identities = conn.execute(
        "SELECT channel, user_key, created_at FROM identities WHERE user_id = ? "
        "ORDER BY identity_id",
        (user_id,),
    ).fetchall()
    return _user_view(r, identities)


def handoff_for_staff_message(
    conn: sqlite3.Connection, channel: Channel, chat_id: str, message_id: str
) -> int | None:
    r = conn.execute(
        "SELECT handoff_id FROM staff_messages WHERE channel = ? AND chat_id = ? AND message_id = ?",
        (channel.value, chat_id, message_id),
    ).fetchone()
    return None if r is None else int(r[0])


def record_audit(conn: sqlite3.Connection, entry: AuditEntry) -> int:
    r = conn.execute(
        f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING audit_id",
        audit_values(entry),
    ).fetchone()
    return int(r[0])


def audit_entries(conn: sqlite3.Connection, *, limit: int, before: int | None) -> list[AuditRow]:
    rows = conn.execute(
        "SELECT * FROM audit_log WHERE audit_id < ? ORDER BY audit_id DESC LIMIT ?",
        (_NO_BOUND if before is None else before, limit),
    )
    return [audit_row(r) for r in rows]
