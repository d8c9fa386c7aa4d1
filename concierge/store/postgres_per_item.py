"""One item's statements on PostgreSQL, for the store's single calls and a refused batch.

The store's one-purpose calls (``resolve_user``, ``pending_inbox``, ...) read and write
through these; a batch the server refuses falls back to ``open_conversation`` and
``write_turn`` item by item, so that one bad item fails alone.
"""

from __future__ import annotations

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
from concierge.store.postgres_driver import Conn, clean as _clean
from concierge.store.rows import (
    Opening,
    conversation_row,
    handoff_row as _handoff_row,
    inbox_row as _inbox_row,
    interaction_values as _interaction_values,
)

_INSERT_INTERACTION = (
    "INSERT INTO interactions (correlation_id, conversation_id, provider, model, key_alias, "
    "latency_s, tokens_in, tokens_out, outcome, service_type, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)


async def write_turn(conn: Conn, turn: TurnRecord) -> tuple[int, ...]:
    """One turn's rows, inside the caller's transaction; ``()`` if the row was already processed.

    Claiming the inbox row first locks it, so a concurrent writer waits and then finds
    it processed.
    """
    service = turn.service_type.value if turn.service_type else None
    claimed = await conn.fetchval(
        "UPDATE inbox SET processed_at = now(), service_type = coalesce($2, service_type), "
        "lease_key = $3, lease_epoch = $4 "
        "WHERE inbox_id = $1 AND processed_at IS NULL RETURNING inbox_id",
        turn.inbox_id,
        service,
        turn.lease_key,
        turn.lease_epoch,
    )
    if claimed is None:  # processed before (or erased with its user): nothing to answer
        return ()
    for direction, text in (
        (Direction.INBOUND, turn.inbound_text),
        (Direction.OUTBOUND, turn.outbound_text),
    ):
        if text is not None:
            await conn.execute(
                "INSERT INTO messages (conversation_id, direction, text, service_type, "
                "correlation_id) VALUES ($1, $2, $3, $4, $5)",
                turn.conversation_id,
                direction.value,
                _clean(text),
                service,
                turn.correlation_id,
            )
    ids = [await insert_outbox(conn, r) for r in turn.replies]
    if turn.interaction is not None:
        await conn.execute(_INSERT_INTERACTION, *_interaction_values(turn.interaction))
    if turn.conversation_type is not None:
        await conn.execute(
            "UPDATE conversations SET service_type = $2, updated_at = now() "
            "WHERE conversation_id = $1",
            turn.conversation_id,
            turn.conversation_type.value,
        )
    elif turn.inbound_text is not None or turn.outbound_text is not None:
        await conn.execute(
            "UPDATE conversations SET updated_at = now() WHERE conversation_id = $1",
            turn.conversation_id,
        )
    return tuple(int(i) for i in ids)


async def insert_outbox(conn: Conn, reply: OutboundReply) -> int:
    """Write one outbox row; return its id."""
    outbox_id = await conn.fetchval(
        "INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, "
        "handoff_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING outbox_id",
        reply.correlation_id,
        reply.channel.value,
        reply.user_key,
        reply.chat_id,
        _clean(reply.text),
        reply.inbox_id,
        reply.handoff_id,
    )
    return int(outbox_id)


async def open_conversation(conn: Conn, o: Opening) -> ConversationStart:
    """One opening on its own statements: what a batch of opens reads, one item at a time."""
    user_id = await resolve_user(conn, o.channel, o.user_key, o.display_name)
    row = await conversation_for(conn, user_id)
    return ConversationStart(
        user_id=user_id,
        conversation=row,
        handoff=await active_handoff(conn, row.conversation_id),
        pending=tuple(await pending_inbox(conn, o.user_key, o.pending_limit)),
        recent=tuple(await recent_turns(conn, row.conversation_id, o.recent_limit)),
    )


async def resolve_user(
    conn: Conn, channel: Channel, user_key: str, display_name: str | None
) -> int:
    user_id = await conn.fetchval(
        "SELECT user_id FROM identities WHERE channel = $1 AND user_key = $2",
        channel.value,
        user_key,
    )
    if user_id is not None:
        await conn.execute(
            "UPDATE users SET unreachable = false, display_name = coalesce($2, display_name) "
            "WHERE user_id = $1 AND (unreachable OR "
            "($2::text IS NOT NULL AND display_name IS DISTINCT FROM $2))",
            user_id,
            display_name,
        )
        return int(user_id)
    async with conn.transaction():
        new_id = await conn.fetchval(
            "INSERT INTO users (display_name) VALUES ($1) RETURNING user_id", display_name
        )
        linked = await conn.fetchval(
            "INSERT INTO identities (user_id, channel, user_key) VALUES ($1, $2, $3) "
            "ON CONFLICT (channel, user_key) DO NOTHING RETURNING user_id",
            new_id,
            channel.value,
            user_key,
        )
        if linked is not None:
            return int(linked)
        await conn.execute("DELETE FROM users WHERE user_id = $1", new_id)
    # Lost a race with a concurrent first contact: theirs wins.
    return int(
        await conn.fetchval(
            "SELECT user_id FROM identities WHERE channel = $1 AND user_key = $2",
            channel.value,
            user_key,
        )
    )


async def conversation_for(conn: Conn, user_id: int) -> ConversationRow:
    r = await conn.fetchrow("SELECT * FROM conversations WHERE user_id = $1", user_id)
    if r is None:
        await conn.execute(
            "INSERT INTO conversations (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
            user_id,
        )
        r = await conn.fetchrow("SELECT * FROM conversations WHERE user_id = $1", user_id)
    return conversation_row(r)


async def active_handoff(conn: Conn, conversation_id: int) -> HandoffRow | None:
    r = await conn.fetchrow(
        "SELECT * FROM handoffs WHERE conversation_id = $1 AND state <> 'closed'",
        conversation_id,
    )
    return None if r is None else _handoff_row(r)


# One user's rows through inbox_user_key, pending ones kept after the OFFSET 0 fence, as the
# batch of opens reads them: left to itself the planner ANDs in inbox_pending, which right
# after a burst holds thousands of entries (live or dead) to walk for this one key.
_PENDING_FOR_KEY = """
SELECT * FROM (
    SELECT * FROM inbox WHERE user_key = $1 ORDER BY inbox_id OFFSET 0
) AS mine
WHERE processed_at IS NULL
ORDER BY inbox_id
LIMIT $2
"""


async def pending_inbox(conn: Conn, user_key: str | None, limit: int) -> list[Inbound]:
    if user_key is None:
        rows = await conn.fetch(
            "SELECT * FROM inbox WHERE processed_at IS NULL ORDER BY inbox_id LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(_PENDING_FOR_KEY, user_key, limit)
    return [_inbox_row(r) for r in rows]


async def recent_turns(conn: Conn, conversation_id: int, limit: int) -> list[Turn]:
    rows = await conn.fetch(
        "SELECT direction, text FROM messages WHERE conversation_id = $1 AND text <> '' "
        "ORDER BY message_id DESC LIMIT $2",
        conversation_id,
        limit,
    )
    return [
        Turn(role=Role.USER if r[0] == Direction.INBOUND.value else Role.ASSISTANT, text=r[1])
        for r in reversed(rows)
    ]
