"""The staff desk's statements on PostgreSQL: handoffs as staff see them, staff replies, audit.

asyncio code for ``PostgresStore._call``/``_tx`` to run on a pooled connection, like
``postgres_per_item``; ``record_staff_reply`` and ``mark_sent`` run in a transaction.
"""

from __future__ import annotations

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
from concierge.store.postgres_driver import Conn, clean
from concierge.store.postgres_per_item import insert_outbox
from concierge.store.rows import (
    AUDIT_COLUMNS,
    HANDOFF_VIEW,
    audit_row,
    audit_values,
    handoff_view as _handoff_view,
    history_entry,
    user_view as _user_view,
)

_NO_BOUND = 2**63 - 1


async def mark_sent(conn: Conn, outbox_id: int, message_ids: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE outbox SET sent_at = coalesce(sent_at, now()), attempts = attempts + 1 "
        "WHERE outbox_id = $1",
        outbox_id,
    )
    if message_ids:
        await conn.execute(
            "INSERT INTO staff_messages (channel, chat_id, message_id, handoff_id) "
            "SELECT o.channel, o.chat_id, m.id, o.handoff_id "
            "FROM outbox AS o, unnest($2::text[]) AS m(id) "
            "WHERE o.outbox_id = $1 AND o.handoff_id IS NOT NULL "
            "ON CONFLICT DO NOTHING",
            outbox_id,
            list(message_ids),
        )


async def list_handoffs(
    conn: Conn, *, active: bool, limit: int, before: int | None
) -> list[HandoffView]:
    if active:
        where, order = "h.state <> 'closed'", "h.urgent DESC, h.handoff_id"
    else:
        where, order = "h.state = 'closed'", "h.handoff_id DESC"
    rows = await conn.fetch(
        f"{HANDOFF_VIEW} WHERE {where} AND h.handoff_id < $1 ORDER BY {order} LIMIT $2",
        _NO_BOUND if before is None else before,
        limit,
    )
    return [_handoff_view(r) for r in rows]


async def handoff_view(conn: Conn, handoff_id: int) -> HandoffView | None:
    r = await conn.fetchrow(f"{HANDOFF_VIEW} WHERE h.handoff_id = $1", handoff_id)
    return None if r is None else _handoff_view(r)


async def claim_handoff(conn: Conn, handoff_id: int, by: str, take_over: bool) -> None:
    await conn.execute(
        "UPDATE handoffs SET state = 'assigned', assigned_to = $2, assigned_at = now() "
        "WHERE handoff_id = $1 AND (state = 'open' OR (state = 'assigned' AND $3))",
        handoff_id,
        clean(by),
        take_over,
    )


async def record_staff_reply(conn: Conn, reply: StaffReply) -> int | None:
    conversation_id = await conn.fetchval(
        "SELECT conversation_id FROM handoffs WHERE handoff_id = $1 AND state <> 'closed' "
        "FOR NO KEY UPDATE",
        reply.handoff_id,
    )
    if conversation_id is None:
        return None
    if reply.inbox_id is not None:
        claimed = await conn.fetchval(
            "UPDATE inbox SET processed_at = now() WHERE inbox_id = $1 AND processed_at IS NULL "
            "RETURNING inbox_id",
            reply.inbox_id,
        )
        if claimed is None:
            return None
    await conn.execute(
        "INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id, "
        "author) VALUES ($1, $2, $3, $4, $5, $6)",
        conversation_id,
        Direction.OUTBOUND.value,
        clean(reply.text),
        ServiceType.CONTACT_HUMAIN.value,
        reply.reply.correlation_id,
        clean(reply.author),
    )
    outbox_id = await insert_outbox(conn, reply.reply)
    await conn.execute(
        "UPDATE handoffs SET state = 'assigned', assigned_to = $2, assigned_at = now() "
        "WHERE handoff_id = $1 AND state = 'open'",
        reply.handoff_id,
        clean(reply.author),
    )
    await conn.execute(
        "UPDATE conversations SET updated_at = now() WHERE conversation_id = $1", conversation_id
    )
    return outbox_id


async def history(
    conn: Conn, conversation_id: int, *, limit: int, before: int | None
) -> list[HistoryEntry]:
    rows = await conn.fetch(
        "SELECT message_id, direction, text, author, service_type, created_at FROM messages "
        "WHERE conversation_id = $1 AND message_id < $2 ORDER BY message_id DESC LIMIT $3",
        conversation_id,
        _NO_BOUND if before is None else before,
        limit,
    )
    return [history_entry(r) for r in reversed(rows)]


async def user_view(conn: Conn, user_id: int) -> UserView | None:
    r = await conn.fetchrow(
        "SELECT u.*, c.conversation_id, "
        "(SELECT h.handoff_id FROM handoffs AS h WHERE h.conversation_id = c.conversation_id "
        " AND h.state <> 'closed') AS active_handoff_id "
        "FROM users AS u LEFT JOIN conversations AS c ON c.user_id = u.user_id "
        "WHERE u.user_id = $1",
        user_id,
    )
    if r is None:
        return None
    identities = await conn.fetch(
        "SELECT channel, user_key, created_at FROM identities WHERE user_id = $1 "
        "ORDER BY identity_id",
        user_id,
    )
    return _user_view(r, identities)


async def handoff_for_staff_message(
    conn: Conn, channel: Channel, chat_id: str, message_id: str
) -> int | None:
    value = await conn.fetchval(
        "SELECT handoff_id FROM staff_messages "
        "WHERE channel = $1 AND chat_id = $2 AND message_id = $3",
        channel.value,
        clean(chat_id),
        clean(message_id),
    )
    return None if value is None else int(value)


async def record_audit(conn: Conn, entry: AuditEntry) -> int:
    values = [clean(v) if isinstance(v, str) else v for v in audit_values(entry)]
    audit_id = await conn.fetchval(
        f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "RETURNING audit_id",
        *values,
    )
    return int(audit_id)


async def audit_entries(conn: Conn, *, limit: int, before: int | None) -> list[AuditRow]:
    rows = await conn.fetch(
        "SELECT * FROM audit_log WHERE audit_id < $1 ORDER BY audit_id DESC LIMIT $2",
        _NO_BOUND if before is None else before,
        limit,
    )
    return [audit_row(r) for r in rows]
