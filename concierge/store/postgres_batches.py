"""Group-committed batches on PostgreSQL: opens and completed turns in set-based statements.

A batch costs a fixed handful of statements over ``unnest`` arrays whatever its size
(opens six at most, turns one): the client work per statement, not the server, bounds
a burst. When the server refuses a batch (one item's bad value), its items run again
one at a time on their own statements, so that one item fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from concierge.protocol import (
    ConversationRow,
    ConversationStart,
    Direction,
    HandoffRow,
    Inbound,
    Role,
    Turn,
    TurnRecord,
)
from concierge.store.errors import StoreError
from concierge.store.postgres_driver import (
    UNAVAILABLE as _UNAVAILABLE,
    Conn,
    as_store_error as _as_store_error,
    clean as _clean,
    connection_lost as _connection_lost,
)
from concierge.store.postgres_per_item import (
    open_conversation as _open_conversation,
    write_turn as _write_turn,
)
from concierge.store.rows import (
    Opening,
    conversation_row,
    handoff_row as _handoff_row,
    inbox_row as _inbox_row,
    interaction_values as _interaction_values,
)

log = structlog.get_logger(__name__)

# Each statement locks rows in ascending key order, so two overlapping batches wait for
# each other instead of deadlocking.

# -- conversation opens ----------------------------------------------------------------------

_RESOLVE_USERS = """
WITH k AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
         WITH ORDINALITY AS k(channel, user_key, display_name, ord)
), found AS (
    SELECT k.ord, i.user_id, k.display_name
    FROM k JOIN identities AS i USING (channel, user_key)
), wanted AS (
    SELECT DISTINCT ON (user_id) user_id, display_name FROM found
    ORDER BY user_id, display_name IS NULL, ord DESC
), stale AS MATERIALIZED (
    SELECT u.user_id, w.display_name FROM users AS u JOIN wanted AS w USING (user_id)
    WHERE u.unreachable
       OR (w.display_name IS NOT NULL AND u.display_name IS DISTINCT FROM w.display_name)
    ORDER BY u.user_id
    FOR NO KEY UPDATE OF u
), touched AS (
    UPDATE users AS u
    SET unreachable = false, display_name = coalesce(s.display_name, u.display_name)
    FROM stale AS s WHERE u.user_id = s.user_id
)
SELECT ord, user_id FROM found
"""

# Identities first, with user ids drawn from the users sequence: a key that a concurrent
# first contact claimed creates no user at all (the foreign key is checked at the end of
# the statement, when the users rows exist).
_CREATE_USERS = """
WITH k AS (
    SELECT channel, user_key, display_name, nextval('users_user_id_seq'::regclass) AS user_id
    FROM unnest($1::text[], $2::text[], $3::text[]) AS k(channel, user_key, display_name)
), linked AS (
    INSERT INTO identities (user_id, channel, user_key)
    SELECT user_id, channel, user_key FROM k ORDER BY channel, user_key
    ON CONFLICT (channel, user_key) DO NOTHING
    RETURNING user_id, channel, user_key
), made AS (
    INSERT INTO users (user_id, display_name)
    SELECT l.user_id, k.display_name FROM linked AS l JOIN k USING (user_id)
)
SELECT user_id, channel, user_key FROM linked
"""

# Existing conversations come from the statement's snapshot, new ones from RETURNING; one
# created by a concurrent transaction after that snapshot is in neither (asked again).
_OPEN_CONVERSATIONS = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::int[]) AS u(user_id, recent_limit)
), made AS (
    INSERT INTO conversations (user_id)
    SELECT user_id FROM u
    WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.user_id = u.user_id)
    ORDER BY user_id
    ON CONFLICT (user_id) DO NOTHING
    RETURNING *
), c AS (
    SELECT made.*, 0 AS recent_limit FROM made
    UNION ALL
    SELECT c.*, u.recent_limit FROM conversations AS c JOIN u USING (user_id)
)
SELECT c.conversation_id, c.user_id, c.service_type, c.handoff_open, c.updated_at,
       h.handoff_id, h.user_key, h.state, h.reason, h.correlation_id, h.opened_at,
       h.closed_at, h.closed_by, h.urgent, r.directions, r.texts
FROM c
LEFT JOIN handoffs AS h ON h.conversation_id = c.conversation_id AND h.state <> 'closed'
LEFT JOIN LATERAL (
    SELECT array_agg(m.direction ORDER BY m.message_id) AS directions,
           array_agg(m.text ORDER BY m.message_id) AS texts
    FROM (SELECT message_id, direction, text FROM messages
          WHERE conversation_id = c.conversation_id AND text <> ''
          ORDER BY message_id DESC LIMIT c.recent_limit) AS m
) AS r ON true
"""

# Each user's rows through inbox_user_key, pending ones kept after the OFFSET 0 fence: left
# to itself the planner may AND in inbox_pending, which right after a burst holds thousands
# of entries (live or dead) to walk for every key.
_PENDING_BY_KEY = """
SELECT i.* FROM unnest($1::text[], $2::int[]) AS k(user_key, lim)
CROSS JOIN LATERAL (
    SELECT * FROM (
        SELECT * FROM inbox WHERE inbox.user_key = k.user_key ORDER BY inbox_id OFFSET 0
    ) AS mine
    WHERE processed_at IS NULL
    LIMIT k.lim
) AS i
ORDER BY i.inbox_id
"""


Key = tuple[str, str]  # (channel, user_key)
View = tuple[ConversationRow, HandoffRow | None, list[Turn]]


async def _resolve_users(conn: Conn, names: dict[Key, str | None]) -> dict[Key, int]:
    """Every key's user id, creating users and identities for the keys seen for the first time.

    A key a concurrent first contact linked meanwhile resolves to that user, and still
    clears its unreachable mark and takes the display name given here.
    """

    async def find(keys: list[Key]) -> dict[Key, int]:
        rows = await conn.fetch(
            _RESOLVE_USERS, [k[0] for k in keys], [k[1] for k in keys], [names[k] for k in keys]
        )
        return {keys[r[0] - 1]: int(r[1]) for r in rows}

    users = await find(list(names))
    missing = [k for k in names if k not in users]
    if missing:
        made = await conn.fetch(
            _CREATE_USERS,
            [k[0] for k in missing],
            [k[1] for k in missing],
            [names[k] for k in missing],
        )
        users.update({(r[1], r[2]): int(r[0]) for r in made})
        lost = [k for k in missing if k not in users]
        if lost:
            users.update(await find(lost))
    return users


def _view(r: Any) -> View:
    handoff = None if r["handoff_id"] is None else _handoff_row(r)
    turns = [
        Turn(role=Role.USER if d == Direction.INBOUND.value else Role.ASSISTANT, text=t)
        for d, t in zip(r["directions"] or (), r["texts"] or (), strict=True)
    ]
    return conversation_row(r), handoff, turns


async def _conversation_views(conn: Conn, recent_limits: dict[int, int]) -> dict[int, View]:
    """Each user's conversation (created on first use), open handoff and newest turns."""
    views: dict[int, View] = {}
    for _ in range(2):  # again for conversations a concurrent open created meanwhile
        wanted = [u for u in recent_limits if u not in views]
        if not wanted:
            break
        rows = await conn.fetch(_OPEN_CONVERSATIONS, wanted, [recent_limits[u] for u in wanted])
        views.update({int(r["user_id"]): _view(r) for r in rows})
    return views


async def pending_by_key(conn: Conn, limits: dict[str, int]) -> dict[str, list[Inbound]]:
    """Each user's oldest unprocessed rows, at most ``limits[user_key]`` (0: none), oldest first."""
    wanted = {k: n for k, n in limits.items() if n != 0}
    pending: dict[str, list[Inbound]] = {}
    if wanted:
        for r in await conn.fetch(_PENDING_BY_KEY, list(wanted), list(wanted.values())):
            pending.setdefault(r["user_key"], []).append(_inbox_row(r))
    return pending


async def _open_batch(
    conn: Conn, openings: Sequence[Opening]
) -> list[ConversationStart | Exception]:
    """``_open_conversation`` for a whole batch in at most six statements.

    A key opened twice resolves once: the last display name given wins, as it would
    one call after the other, and each opening gets its own limits.
    """
    names: dict[Key, str | None] = {}
    for o in openings:
        key = (o.channel.value, o.user_key)
        if o.display_name is not None or key not in names:
            names[key] = o.display_name
    users = await _resolve_users(conn, names)
    recent_limits: dict[int, int] = {}
    pending_limits: dict[str, int] = {}
    for o in openings:
        user_id = users.get((o.channel.value, o.user_key))
        if user_id is not None:
            recent_limits[user_id] = max(recent_limits.get(user_id, o.recent_limit), o.recent_limit)
        pending_limits[o.user_key] = max(
            pending_limits.get(o.user_key, o.pending_limit), o.pending_limit
        )
    views = await _conversation_views(conn, recent_limits)
    pending = await pending_by_key(conn, pending_limits)
    results: list[ConversationStart | Exception] = []
    for o in openings:
        user_id = users.get((o.channel.value, o.user_key))
        if user_id is None or user_id not in views:
            results.append(StoreError(f"postgres: no user or conversation for {o.user_key!r}"))
            continue
        conversation, handoff, turns = views[user_id]
        results.append(
            ConversationStart(
                user_id=user_id,
                conversation=conversation,
                handoff=handoff,
                pending=tuple(pending.get(o.user_key, ())[: max(o.pending_limit, 0)]),
                recent=tuple(turns[max(len(turns) - o.recent_limit, 0) :])
                if o.recent_limit > 0
                else (),
            )
        )
    return results


async def flush_openings(
    conn: Conn, openings: Sequence[Opening]
) -> list[ConversationStart | Exception]:
    """The whole batch in a few set-based statements; a server error fails one opening alone.

    When the batch's statements fail on the server (one opening's bad value), each
    opening runs again on its own statements, so the others still open; every step
    is idempotent. A lost connection fails (or retries) the whole batch.
    """
    try:
        return await _open_batch(conn, openings)
    except asyncpg.PostgresError as exc:
        if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
            raise
        log.info("store.batch_split", backend="postgres", batch=len(openings), error=repr(exc))
    results: list[ConversationStart | Exception] = []
    for o in openings:
        try:
            results.append(await _open_conversation(conn, o))
        except asyncpg.PostgresError as exc:
            if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
                raise
            results.append(_as_store_error(exc))
    return results


# -- completed turns -------------------------------------------------------------------------
# One statement, so one transaction: claim the unprocessed rows (locked in ascending
# inbox_id order), then write only the claimed turns' rows, and touch their conversations
# (locked in ascending conversation_id order). Rows are inserted in batch order; outbox
# ids, drawn from the sequence in that order, map back to the replies by rank.
_COMPLETE_TURNS = """
WITH claimable AS MATERIALIZED (
    SELECT inbox_id FROM inbox
    WHERE inbox_id = ANY($1::bigint[]) AND processed_at IS NULL
    ORDER BY inbox_id
    FOR NO KEY UPDATE
), claimed AS (
    UPDATE inbox SET processed_at = now(), service_type = coalesce(t.service_type, inbox.service_type),
                     lease_key = t.lease_key, lease_epoch = t.lease_epoch
    FROM claimable AS l
         JOIN unnest($1::bigint[], $2::text[], $32::text[], $33::bigint[])
              AS t(inbox_id, service_type, lease_key, lease_epoch)
         USING (inbox_id)
    WHERE inbox.inbox_id = l.inbox_id
    RETURNING inbox.inbox_id
), messages_written AS (
    INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id)
    SELECT conversation_id, direction, text, service_type, correlation_id
    FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
         WITH ORDINALITY AS m(turn, conversation_id, direction, text, service_type,
                              correlation_id, ord)
    WHERE turn IN (SELECT inbox_id FROM claimed)
    ORDER BY ord
), outbox_written AS (
    INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, handoff_id)
    SELECT correlation_id, channel, user_key, chat_id, text, inbox_id, handoff_id
    FROM unnest($9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::bigint[], $31::bigint[])
         WITH ORDINALITY AS o(turn, correlation_id, channel, user_key, chat_id, text, inbox_id,
                              handoff_id, ord)
    WHERE turn IN (SELECT inbox_id FROM claimed)
    ORDER BY ord
    RETURNING outbox_id
), interactions_written AS (
    INSERT INTO interactions (correlation_id, conversation_id, provider, model, key_alias,
                              latency_s, tokens_in, tokens_out, outcome, service_type, created_at)
    SELECT correlation_id, conversation_id, provider, model, key_alias,
           latency_s, tokens_in, tokens_out, outcome, service_type, created_at
    FROM unnest($16::bigint[], $17::text[], $18::bigint[], $19::text[], $20::text[], $21::text[],
                $22::float8[], $23::int[], $24::int[], $25::text[], $26::text[],
                $27::timestamptz[])
         WITH ORDINALITY AS i(turn, correlation_id, conversation_id, provider, model, key_alias,
                              latency_s, tokens_in, tokens_out, outcome, service_type,
                              created_at, ord)
    WHERE turn IN (SELECT inbox_id FROM claimed)
    ORDER BY ord
), touched AS (
    SELECT conversation_id,
           (array_agg(service_type ORDER BY ord DESC)
                FILTER (WHERE service_type IS NOT NULL))[1] AS service_type
    FROM unnest($28::bigint[], $29::bigint[], $30::text[])
         WITH ORDINALITY AS c(turn, conversation_id, service_type, ord)
    WHERE turn IN (SELECT inbox_id FROM claimed)
    GROUP BY conversation_id
), locked AS MATERIALIZED (
    SELECT c.conversation_id, t.service_type
    FROM conversations AS c JOIN touched AS t USING (conversation_id)
    ORDER BY c.conversation_id
    FOR NO KEY UPDATE OF c
), conversations_touched AS (
    UPDATE conversations AS c
    SET service_type = coalesce(l.service_type, c.service_type), updated_at = now()
    FROM locked AS l
    WHERE c.conversation_id = l.conversation_id
)
SELECT true AS claim, inbox_id AS id FROM claimed
UNION ALL
SELECT false, outbox_id FROM outbox_written
"""

_RETRIED = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


def _turn_columns(turns: Sequence[TurnRecord]) -> list[list[Any]]:
    """The ``_COMPLETE_TURNS`` arguments: each column as one array, rows in batch order."""
    claim: list[list[Any]] = [[], []]
    messages: list[list[Any]] = [[] for _ in range(6)]
    outbox: list[list[Any]] = [[] for _ in range(7)]
    interactions: list[list[Any]] = [[] for _ in range(12)]
    touched: list[list[Any]] = [[] for _ in range(3)]
    outbox_handoffs: list[Any] = []  # the outbox's last column, $31: added after the others
    leases: list[list[Any]] = [[], []]  # the claim's lease key and epoch, $32 and $33

    def add(columns: list[list[Any]], *values: Any) -> None:
        for column, value in zip(columns, values, strict=True):
            column.append(value)

    for t in turns:
        service = t.service_type.value if t.service_type else None
        add(claim, t.inbox_id, service)
        add(leases, t.lease_key, t.lease_epoch)
        for direction, text in (
            (Direction.INBOUND, t.inbound_text),
            (Direction.OUTBOUND, t.outbound_text),
        ):
            if text is not None:
                add(
                    messages,
                    t.inbox_id,
                    t.conversation_id,
                    direction.value,
                    _clean(text),
                    service,
                    t.correlation_id,
                )
        for r in t.replies:
            add(
                outbox,
                t.inbox_id,
                r.correlation_id,
                r.channel.value,
                r.user_key,
                r.chat_id,
                _clean(r.text),
                r.inbox_id,
            )
            outbox_handoffs.append(r.handoff_id)
        if t.interaction is not None:
            add(interactions, t.inbox_id, *_interaction_values(t.interaction))
        if t.conversation_type is not None:
            add(touched, t.inbox_id, t.conversation_id, t.conversation_type.value)
        elif t.inbound_text is not None or t.outbound_text is not None:
            add(touched, t.inbox_id, t.conversation_id, None)
    return [*claim, *messages, *outbox, *interactions, *touched, outbox_handoffs, *leases]


async def _complete_batch(conn: Conn, turns: Sequence[TurnRecord]) -> list[tuple[int, ...]]:
    """``_write_turn`` for a whole batch, in one statement (once more after a deadlock).

    An inbox row named twice is claimed by its first turn; the later ones get ``()``,
    as they would one after the other.
    """
    first: dict[int, int] = {}
    for position, t in enumerate(turns):
        first.setdefault(t.inbox_id, position)
    unique = [turns[p] for p in first.values()]
    columns = _turn_columns(unique)
    try:
        rows = await conn.fetch(_COMPLETE_TURNS, *columns)
    except _RETRIED as exc:
        log.info("store.batch_retried", backend="postgres", batch=len(turns), error=repr(exc))
        rows = await conn.fetch(_COMPLETE_TURNS, *columns)
    claimed = {r[1] for r in rows if r[0]}
    outbox_ids = sorted(int(r[1]) for r in rows if not r[0])
    expected = sum(len(t.replies) for t in unique if t.inbox_id in claimed)
    if len(outbox_ids) != expected:
        raise StoreError(f"postgres: {len(outbox_ids)} outbox rows written for {expected} replies")
    ids = iter(outbox_ids)
    written = {
        t.inbox_id: tuple(next(ids) for _ in t.replies) for t in unique if t.inbox_id in claimed
    }
    return [
        written.get(t.inbox_id, ()) if first[t.inbox_id] == position else ()
        for position, t in enumerate(turns)
    ]


async def flush_turns(conn: Conn, turns: Sequence[TurnRecord]) -> list[tuple[int, ...] | Exception]:
    """The whole batch in one statement; a server error fails one turn alone.

    When the batch's statement fails on the server (one turn's bad row), nothing of
    it was written, and each turn runs again in its own transaction, so the others
    still commit.
    """
    try:
        return list(await _complete_batch(conn, turns))
    except asyncpg.PostgresError as exc:
        if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
            raise
        log.info("store.batch_split", backend="postgres", batch=len(turns), error=repr(exc))
    results: list[tuple[int, ...] | Exception] = []
    for turn in turns:
        try:
            async with conn.transaction():
                results.append(await _write_turn(conn, turn))
        except asyncpg.PostgresError as exc:
            if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
                raise
            results.append(_as_store_error(exc))
    return results
