"""One item's statements on SQLite, for the store's single calls and a batch that fails.

The store's one-purpose calls (``resolve_user``, ``pending_inbox``, ...) read and write
through these; a batch that one of its items fails runs again with ``open_conversation``
and ``write_turn`` item by item, each in a savepoint, so that item fails alone.
"""

from __future__ import annotations

import sqlite3

from concierge.protocol import (
    Channel,
    ConversationRow,
    ConversationStart,
    Direction,
    HandoffRow,
    Inbound,
    OutboundReply,
    Role,
    Turn,
    TurnRecord,
)
from concierge.store.rows import Opening
from concierge.store.sqlite_driver import (
    conversation_row as _conversation_row,
    handoff_row as _handoff_row,
    inbox_row as _inbox_row,
    interaction_values as _interaction_values,
)

INSERT_OUTBOX = (
    "INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, handoff_id, "
    "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING outbox_id"
)


def outbox_values(reply: OutboundReply, now: str) -> tuple[object, ...]:
    """``INSERT_OUTBOX``'s parameters for ``reply``."""
    return (
        reply.correlation_id,
        reply.channel.value,
        reply.user_key,
        reply.chat_id,
        reply.text,
        reply.inbox_id,
        reply.handoff_id,
        now,
        now,
    )


_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?)"
)

_INSERT_INTERACTION = (
    "INSERT INTO interactions (correlation_id, conversation_id, provider, model, key_alias, "
    "latency_s, tokens_in, tokens_out, outcome, service_type, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_turn(conn: sqlite3.Connection, turn: TurnRecord, now: str) -> tuple[int, ...]:
    """One turn's rows, inside the caller's transaction; ``()`` if the row was already processed."""
    claimed = conn.execute(
        "UPDATE inbox SET processed_at = ?, service_type = coalesce(?, service_type) "
        "WHERE inbox_id = ? AND processed_at IS NULL RETURNING inbox_id",
        (now, turn.service_type.value if turn.service_type else None, turn.inbox_id),
    ).fetchone()
    if claimed is None:  # processed before (or erased with its user): nothing to answer
        return ()
    service = turn.service_type.value if turn.service_type else None
    for direction, text in (
        (Direction.INBOUND, turn.inbound_text),
        (Direction.OUTBOUND, turn.outbound_text),
    ):
        if text is not None:
            conn.execute(
                _INSERT_MESSAGE,
                (turn.conversation_id, direction.value, text, service, turn.correlation_id, now),
            )
    ids = tuple(
        int(conn.execute(INSERT_OUTBOX, outbox_values(r, now)).fetchone()[0]) for r in turn.replies
    )
    if turn.interaction is not None:
        conn.execute(_INSERT_INTERACTION, _interaction_values(turn.interaction))
    if turn.conversation_type is not None:
        conn.execute(
            "UPDATE conversations SET service_type = ?, updated_at = ? WHERE conversation_id = ?",
            (turn.conversation_type.value, now, turn.conversation_id),
        )
    elif turn.inbound_text is not None or turn.outbound_text is not None:
        conn.execute(
            "UPDATE conversations SET updated_at = ? WHERE conversation_id = ?",
            (now, turn.conversation_id),
        )
    return ids


def open_conversation(conn: sqlite3.Connection, o: Opening, now: str) -> ConversationStart:
    user_id = resolve_user(conn, o.channel, o.user_key, o.display_name, now)
    row = conversation_for(conn, user_id, now)
    return ConversationStart(
        user_id=user_id,
        conversation=row,
        handoff=active_handoff(conn, row.conversation_id),
        pending=tuple(pending_inbox(conn, o.user_key, o.pending_limit)),
        recent=tuple(recent_turns(conn, row.conversation_id, o.recent_limit)),
    )


def resolve_user(
    conn: sqlite3.Connection, channel: Channel, user_key: str, display_name: str | None, now: str
) -> int:
    row = conn.execute(
        "SELECT user_id FROM identities WHERE channel = ? AND user_key = ?",
        (channel.value, user_key),
    ).fetchone()
    if row is not None:
        user_id = int(row[0])
        conn.execute(
            "UPDATE users SET unreachable = 0, display_name = coalesce(?, display_name) "
            "WHERE user_id = ? AND (unreachable = 1 OR "
            "(? IS NOT NULL AND display_name IS NOT ?))",
            (display_name, user_id, display_name, display_name),
        )
        return user_id
    user_id = int(
        conn.execute(
            "INSERT INTO users (display_name, created_at) VALUES (?, ?) RETURNING user_id",
            (display_name, now),
        ).fetchone()[0]
    )
    conn.execute(
        "INSERT INTO identities (user_id, channel, user_key, created_at) VALUES (?, ?, ?, ?)",
        (user_id, channel.value, user_key, now),
    )
    return user_id


def conversation_for(conn: sqlite3.Connection, user_id: int, now: str) -> ConversationRow:
    # Inserting only when missing: an insert the conflict clause drops still uses up an id.
    conn.execute(
        "INSERT INTO conversations (user_id, created_at, updated_at) SELECT ?1, ?2, ?2 "
        "WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE user_id = ?1) "
        "ON CONFLICT (user_id) DO NOTHING",
        (user_id, now),
    )
    r = conn.execute("SELECT * FROM conversations WHERE user_id = ?", (user_id,)).fetchone()
    return _conversation_row(r)


def active_handoff(conn: sqlite3.Connection, conversation_id: int) -> HandoffRow | None:
    r = conn.execute(
        "SELECT * FROM handoffs WHERE conversation_id = ? AND state <> 'closed'",
        (conversation_id,),
    ).fetchone()
    return None if r is None else _handoff_row(r)


def pending_inbox(conn: sqlite3.Connection, user_key: str | None, limit: int) -> list[Inbound]:
    if user_key is None:
        rows = conn.execute(
            "SELECT * FROM inbox WHERE processed_at IS NULL ORDER BY inbox_id LIMIT ?", (limit,)
        )
    else:
        rows = conn.execute(
            "SELECT * FROM inbox WHERE processed_at IS NULL AND user_key = ? "
            "ORDER BY inbox_id LIMIT ?",
            (user_key, limit),
        )
    return [_inbox_row(r) for r in rows]


def recent_turns(conn: sqlite3.Connection, conversation_id: int, limit: int) -> list[Turn]:
    rows = conn.execute(
        "SELECT direction, text FROM messages WHERE conversation_id = ? AND text <> '' "
        "ORDER BY message_id DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [
        Turn(role=Role.USER if r[0] == Direction.INBOUND.value else Role.ASSISTANT, text=r[1])
        for r in reversed(rows)
    ]
