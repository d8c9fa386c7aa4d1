"""PostgreSQL's statements for persons: link codes, merging two persons, taking a channel out.

Each function runs inside the caller's transaction; a merge moves the absorbed
person's identities, messages (their ids keep the time order), interactions,
handoffs and token counts to the person kept, then deletes the absorbed user.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from concierge.protocol import LinkCode, Linked, PersonIdentity, Unlinked
from concierge.store.postgres_driver import Conn
from concierge.store.postgres_per_item import conversation_for

MERGED_BY = "merge"
"""``closed_by`` of a handoff closed because the person it was merged into had one open."""


async def identities_of(conn: Conn, user_id: int) -> tuple[PersonIdentity, ...]:
    rows = await conn.fetch(
        "SELECT user_id, channel, user_key FROM identities WHERE user_id = $1 ORDER BY identity_id",
        user_id,
    )
    return tuple(PersonIdentity(user_id=r[0], channel=r[1], user_key=r[2]) for r in rows)


async def user_of(conn: Conn, user_key: str) -> int | None:
    value = await conn.fetchval(
        "SELECT user_id FROM identities WHERE user_key = $1 ORDER BY identity_id LIMIT 1", user_key
    )
    return None if value is None else int(value)


async def issue_code(
    conn: Conn, *, channel: str, user_key: str, chat_id: str, digest: str, expires_at: datetime
) -> None:
    """One live code per identity: a new one replaces the one before."""
    await conn.execute(
        "INSERT INTO link_codes (digest, channel, user_key, chat_id, expires_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_key) DO UPDATE SET "
        "digest = excluded.digest, channel = excluded.channel, chat_id = excluded.chat_id, "
        "expires_at = excluded.expires_at, created_at = now()",
        digest,
        channel,
        user_key,
        chat_id,
        expires_at,
    )
    await conn.execute("DELETE FROM link_codes WHERE expires_at < now() - interval '1 day'")


def _code(r: Any) -> LinkCode:
    return LinkCode(
        code_id=r["code_id"],
        digest=r["digest"],
        channel=r["channel"],
        user_key=r["user_key"],
        chat_id=r["chat_id"],
        expires_at=r["expires_at"],
    )


async def live_codes(conn: Conn, now: datetime) -> list[LinkCode]:
    rows = await conn.fetch("SELECT * FROM link_codes WHERE expires_at > $1 ORDER BY code_id", now)
    return [_code(r) for r in rows]


async def claim(conn: Conn, code_id: int, *, now: datetime) -> LinkCode | None:
    """Use the code: deleted, so that it serves once."""
    r = await conn.fetchrow(
        "DELETE FROM link_codes WHERE code_id = $1 AND expires_at > $2 RETURNING *",
        code_id,
        now,
    )
    return None if r is None else _code(r)


async def merge(conn: Conn, one: int, other: int) -> Linked:
    """Make two persons one; the older (smaller id) is kept."""
    if one == other:
        return Linked(user_id=one, absorbed_user_id=None, identities=await identities_of(conn, one))
    keep, gone = min(one, other), max(one, other)
    into = await conversation_for(conn, keep)
    await conn.execute("UPDATE identities SET user_id = $1 WHERE user_id = $2", keep, gone)
    await conn.execute(
        "DELETE FROM link_codes WHERE user_key IN "
        "(SELECT user_key FROM identities WHERE user_id = $1)",
        keep,
    )
    source = await conn.fetchval(
        "SELECT conversation_id FROM conversations WHERE user_id = $1", gone
    )
    if source is not None:
        for table in ("messages", "interactions"):
            await conn.execute(
                f"UPDATE {table} SET conversation_id = $1 WHERE conversation_id = $2",
                into.conversation_id,
                source,
            )
        # At most one active handoff per conversation: the kept one's, else the absorbed one's.
        await conn.execute(
            "UPDATE handoffs SET state = 'closed', closed_at = now(), closed_by = $3 "
            "WHERE conversation_id = $2 AND state <> 'closed' AND EXISTS "
            "(SELECT 1 FROM handoffs WHERE conversation_id = $1 AND state <> 'closed')",
            into.conversation_id,
            source,
            MERGED_BY,
        )
        await conn.execute(
            "UPDATE handoffs SET conversation_id = $1 WHERE conversation_id = $2",
            into.conversation_id,
            source,
        )
        await conn.execute(
            "UPDATE conversations AS c SET handoff_open = EXISTS "
            "(SELECT 1 FROM handoffs WHERE conversation_id = c.conversation_id "
            " AND state <> 'closed'), "
            "service_type = CASE WHEN NOT c.handoff_open AND s.handoff_open "
            "THEN s.service_type ELSE c.service_type END, updated_at = now() "
            "FROM conversations AS s WHERE c.conversation_id = $1 AND s.conversation_id = $2",
            into.conversation_id,
            source,
        )
        await conn.execute("DELETE FROM conversations WHERE conversation_id = $1", source)
    await conn.execute(
        "INSERT INTO user_usage AS u (day, user_id, tokens_in, tokens_out, calls) "
        "SELECT day, $1, tokens_in, tokens_out, calls FROM user_usage WHERE user_id = $2 "
        "ON CONFLICT (day, user_id) DO UPDATE SET tokens_in = u.tokens_in + excluded.tokens_in, "
        "tokens_out = u.tokens_out + excluded.tokens_out, calls = u.calls + excluded.calls",
        keep,
        gone,
    )
    await conn.execute("DELETE FROM user_usage WHERE user_id = $1", gone)
    await conn.execute("DELETE FROM users WHERE user_id = $1", gone)
    return Linked(user_id=keep, absorbed_user_id=gone, identities=await identities_of(conn, keep))


async def unlink(conn: Conn, user_key: str) -> Unlinked | None:
    """Move ``user_key``'s channel (a WhatsApp number goes with its ``@lid``) to a new person.

    ``None`` when the identity is unknown or its person has no identity on another channel.
    """
    user_id = await user_of(conn, user_key)
    if user_id is None:
        return None
    identities = await identities_of(conn, user_id)
    channel = next(i.channel for i in identities if i.user_key == user_key)
    remaining = tuple(i for i in identities if i.channel != channel)
    if not remaining:
        return None
    new_user_id = int(await conn.fetchval("INSERT INTO users DEFAULT VALUES RETURNING user_id"))
    await conn.execute(
        "UPDATE identities SET user_id = $1 WHERE user_id = $2 AND channel = $3",
        new_user_id,
        user_id,
        channel,
    )
    return Unlinked(
        user_id=user_id,
        new_user_id=new_user_id,
        moved=await identities_of(conn, new_user_id),
        remaining=remaining,
    )


async def failures_since(conn: Conn, user_key: str, since: datetime) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM link_failures WHERE user_key = $1 AND failed_at > $2",
            user_key,
            since,
        )
    )


async def record_failure(conn: Conn, user_key: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO link_failures (user_key, failed_at) VALUES ($1, $2)", user_key, at
    )
    await conn.execute(
        "DELETE FROM link_failures WHERE failed_at < $1::timestamptz - interval '1 day'", at
    )


async def linked_identities(conn: Conn) -> Sequence[PersonIdentity]:
    """Every identity of a person who has identities on more than one channel."""
    rows = await conn.fetch(
        "SELECT user_id, channel, user_key FROM identities WHERE user_id IN "
        "(SELECT user_id FROM identities GROUP BY user_id HAVING count(DISTINCT channel) > 1) "
        "ORDER BY user_id, identity_id"
    )
    return [PersonIdentity(user_id=r[0], channel=r[1], user_key=r[2]) for r in rows]
