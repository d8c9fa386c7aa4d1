"""SQLite's statements for persons: link codes, merging two persons, taking a channel out.

The same rules as ``postgres_persons``, each function inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from concierge.protocol import LinkCode, Linked, PersonIdentity, Unlinked
from concierge.store.sqlite_driver import dt, ts
from concierge.store.sqlite_per_item import conversation_for

MERGED_BY = "merge"
"""``closed_by`` of a handoff closed because the person it was merged into had one open."""


def identities_of(conn: sqlite3.Connection, user_id: int) -> tuple[PersonIdentity, ...]:
    rows = conn.execute(
        "SELECT user_id, channel, user_key FROM identities WHERE user_id = ? ORDER BY identity_id",
        (user_id,),
    ).fetchall()
    return tuple(PersonIdentity(user_id=r[0], channel=r[1], user_key=r[2]) for r in rows)


def user_of(conn: sqlite3.Connection, user_key: str) -> int | None:
    r = conn.execute(
        "SELECT user_id FROM identities WHERE user_key = ? ORDER BY identity_id LIMIT 1",
        (user_key,),
    ).fetchone()
    return None if r is None else int(r[0])


def issue_code(
    conn: sqlite3.Connection,
    *,
    channel: str,
    user_key: str,
    chat_id: str,
    digest: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """One live code per identity: a new one replaces the one before."""
    conn.execute(
        "INSERT INTO link_codes (digest, channel, user_key, chat_id, expires_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE SET "
        "digest = excluded.digest, channel = excluded.channel, chat_id = excluded.chat_id, "
        "expires_at = excluded.expires_at, created_at = excluded.created_at",
        (digest, channel, user_key, chat_id, ts(expires_at), ts(now)),
    )
    conn.execute("DELETE FROM link_codes WHERE expires_at < ?", (ts(now - timedelta(days=1)),))


def _code(r: sqlite3.Row) -> LinkCode:
    return LinkCode(
        code_id=r["code_id"],
        digest=r["digest"],
        channel=r["channel"],
        user_key=r["user_key"],
        chat_id=r["chat_id"],
        expires_at=dt(r["expires_at"]),
    )


def live_codes(conn: sqlite3.Connection, now: datetime) -> list[LinkCode]:
    rows = conn.execute(
        "SELECT * FROM link_codes WHERE expires_at > ? ORDER BY code_id", (ts(now),)
    ).fetchall()
    return [_code(r) for r in rows]


def claim(conn: sqlite3.Connection, code_id: int, *, now: datetime) -> LinkCode | None:
    """Use the code: deleted, so that it serves once."""
    r = conn.execute(
        "DELETE FROM link_codes WHERE code_id = ? AND expires_at > ? RETURNING *",
        (code_id, ts(now)),
    ).fetchone()
    return None if r is None else _code(r)


def merge(conn: sqlite3.Connection, one: int, other: int, *, now: datetime) -> Linked:
    """Make two persons one; the older (smaller id) is kept."""
    if one == other:
        return Linked(user_id=one, absorbed_user_id=None, identities=identities_of(conn, one))
    keep, gone = min(one, other), max(one, other)
    stamp = ts(now)
    into = conversation_for(conn, keep, stamp).conversation_id
    conn.execute("UPDATE identities SET user_id = ? WHERE user_id = ?", (keep, gone))
    conn.execute(
        "DELETE FROM link_codes WHERE user_key IN (SELECT user_key FROM identities WHERE user_id = ?)",
        (keep,),
    )
    r = conn.execute(
        "SELECT conversation_id FROM conversations WHERE user_id = ?", (gone,)
    ).fetchone()
    if r is not None:
        source = int(r[0])
        for table in ("messages", "interactions"):
            conn.execute(
                f"UPDATE {table} SET conversation_id = ? WHERE conversation_id = ?",
                (into, source),
            )
        # At most one active handoff per conversation: the kept one's, else the absorbed one's.
        conn.execute(
            "UPDATE handoffs SET state = 'closed', closed_at = ?, closed_by = ? "
            "WHERE conversation_id = ? AND state <> 'closed' AND EXISTS "
            "(SELECT 1 FROM handoffs WHERE conversation_id = ? AND state <> 'closed')",
            (stamp, MERGED_BY, source, into),
        )
        conn.execute(
            "UPDATE handoffs SET conversation_id = ? WHERE conversation_id = ?", (into, source)
        )
        conn.execute(
            "UPDATE conversations SET "
            "service_type = CASE WHEN handoff_open = 0 AND "
            " (SELECT handoff_open FROM conversations WHERE conversation_id = ?2) = 1 "
            " THEN (SELECT service_type FROM conversations WHERE conversation_id = ?2) "
            " ELSE service_type END, "
            "handoff_open = EXISTS (SELECT 1 FROM handoffs WHERE conversation_id = ?1 "
            " AND state <> 'closed'), updated_at = ?3 WHERE conversation_id = ?1",
            (into, source, stamp),
        )
        conn.execute("DELETE FROM conversations WHERE conversation_id = ?", (source,))
    conn.execute(
        "INSERT INTO user_usage AS u (day, user_id, tokens_in, tokens_out, calls) "
        "SELECT day, ?1, tokens_in, tokens_out, calls FROM user_usage WHERE user_id = ?2 "
        "ON CONFLICT (day, user_id) DO UPDATE SET tokens_in = u.tokens_in + excluded.tokens_in, "
        "tokens_out = u.tokens_out + excluded.tokens_out, calls = u.calls + excluded.calls",
        (keep, gone),
    )
    conn.execute("DELETE FROM user_usage WHERE user_id = ?", (gone,))
    conn.execute("DELETE FROM users WHERE user_id = ?", (gone,))
    return Linked(user_id=keep, absorbed_user_id=gone, identities=identities_of(conn, keep))


def unlink(conn: sqlite3.Connection, user_key: str, *, now: datetime) -> Unlinked | None:
    """Move ``user_key``'s channel (a WhatsApp number goes with its ``@lid``) to a new person.

    ``None`` when the identity is unknown or its person has no identity on another channel.
    """
    user_id = user_of(conn, user_key)
    if user_id is None:
        return None
    identities = identities_of(conn, user_id)
    channel = next(i.channel for i in identities if i.user_key == user_key)
    remaining = tuple(i for i in identities if i.channel != channel)
    if not remaining:
        return None
    cur = conn.execute("INSERT INTO users (created_at) VALUES (?)", (ts(now),))
    new_user_id = int(cur.lastrowid or 0)
    conn.execute(
        "UPDATE identities SET user_id = ? WHERE user_id = ? AND channel = ?",
        (new_user_id, user_id, channel),
    )
    return Unlinked(
        user_id=user_id,
        new_user_id=new_user_id,
        moved=identities_of(conn, new_user_id),
        remaining=remaining,
    )


def failures_since(conn: sqlite3.Connection, user_key: str, since: datetime) -> int:
    r = conn.execute(
        "SELECT count(*) FROM link_failures WHERE user_key = ? AND failed_at > ?",
        (user_key, ts(since)),
    ).fetchone()
    return int(r[0])


def record_failure(conn: sqlite3.Connection, user_key: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO link_failures (user_key, failed_at) VALUES (?, ?)", (user_key, ts(at))
    )
    conn.execute("DELETE FROM link_failures WHERE failed_at < ?", (ts(at - timedelta(days=1)),))


def linked_identities(conn: sqlite3.Connection) -> list[PersonIdentity]:
    """Every identity of a person who has identities on more than one channel."""
    rows = conn.execute(
        "SELECT user_id, channel, user_key FROM identities WHERE user_id IN "
        "(SELECT user_id FROM identities GROUP BY user_id HAVING count(DISTINCT channel) > 1) "
        "ORDER BY user_id, identity_id"
    ).fetchall()
    return [PersonIdentity(user_id=r[0], channel=r[1], user_key=r[2]) for r in rows]
