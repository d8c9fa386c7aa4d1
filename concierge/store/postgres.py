"""The production durable store: PostgreSQL through asyncpg, bridged into trio by trio-asyncio.

asyncpg is asyncio-only; through ``trio_asyncio.aio_as_trio`` its cancellation is
the cleanest measured (a cancelled trio scope cancels the server query and the
pool stays intact). The bridge and the per-statement client work cost throughput,
so concurrent accepts, conversation opens and completed turns are group-committed:
each batch shares one crossing and runs a fixed handful of set-based statements
over ``unnest`` arrays, whatever its size (accepts two at most, opens six, turns one).
This module is the only one that crosses the bridge; each store method crosses it
at most once. Connection failures become ``StoreUnavailable`` within a bounded time, and
the asyncpg pool replaces broken connections by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import structlog
import trio
import trio_asyncio

from concierge.protocol import Channel, Role, ServiceType, Turn
from concierge.settings import StoreSettings
from concierge.store.base import (
    Accepted,
    AcceptStatus,
    ConversationRow,
    ConversationStart,
    Direction,
    HandoffRow,
    InboxRow,
    Interaction,
    NewInbound,
    NewOutbound,
    OutboxRow,
    TurnRecord,
    UserRow,
)
from concierge.store.errors import SchemaOutdated, StoreError, StoreUnavailable
from concierge.store.group_commit import GroupCommitter, flushing
from concierge.store.migrate import SCHEMA_MIGRATIONS_POSTGRES, latest_version, load_migrations
from concierge.store.rows import (
    Opening,
    conversation_row,
    handoff_row as _handoff_row,
    inbox_row as _inbox_row,
    interaction_values as _interaction_values,
    outbox_row as _outbox_row,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
Conn = Any  # asyncpg.Connection (untyped)
Work = Callable[[Conn], Awaitable[T]]

_MIGRATION_LOCK = 0x636F6E63  # "conc": serialises concurrent `concierge migrate` runs
_ERASE_BATCH = 5000

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, statement timeout, ...
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


_DRIVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a platform message that has one keeps the rest."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _connection_lost(exc: BaseException) -> bool:
    """The connection died under us (not: the server refuses connections)."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)
    return isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.AdminShutdownError,
            # The server's FATAL notice racing our next query on that connection:
            # "cannot switch to state 11; another operation (2) is in progress".
            asyncpg.exceptions.InternalClientError,
            ConnectionResetError,
            BrokenPipeError,
        ),
    )


def _as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return StoreUnavailable(f"postgres: {exc}")
    return StoreError(f"postgres: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """The running trio-asyncio loop, or a new one for this block (CLI commands, tests)."""
    loop = trio_asyncio.current_loop.get()
    if loop is not None:
        yield loop
        return
    async with trio_asyncio.open_loop() as opened:
        yield opened


_INSERT_INBOX_BATCH = """
INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind,
                   received_at, display_name, language_hint)
SELECT c, ch, uk, cid, eid, tx, k, ra, dn, lh
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::text[], $10::text[])
     WITH ORDINALITY AS t(c, ch, uk, cid, eid, tx, k, ra, dn, lh, ord)
ORDER BY ord
ON CONFLICT (channel, external_id) DO NOTHING
RETURNING inbox_id, channel, external_id
"""

_EXISTING_INBOX = """
SELECT inbox_id, channel, external_id FROM inbox
WHERE (channel, external_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""

_INSERT_INTERACTION = (
    "INSERT INTO interactions (correlation_id, conversation_id, provider, model, key_alias, "
    "latency_s, tokens_in, tokens_out, outcome, service_type, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)


_PENDING_OUTBOX = """
SELECT * FROM outbox AS o
WHERE o.channel = $1 AND o.sent_at IS NULL AND NOT o.given_up
  AND o.next_attempt_at <= coalesce($2::timestamptz, now())
  AND NOT EXISTS (
      SELECT 1 FROM outbox AS e
      WHERE e.user_key = o.user_key AND e.outbox_id < o.outbox_id
        AND e.sent_at IS NULL AND NOT e.given_up
        AND e.next_attempt_at > coalesce($2::timestamptz, now()))
ORDER BY o.outbox_id
LIMIT $3
"""


async def _write_turn(conn: Conn, turn: TurnRecord) -> tuple[int, ...]:
    """One turn's rows, inside the caller's transaction; ``()`` if the row was already processed.

    Claiming the inbox row first locks it, so a concurrent writer waits and then finds
    it processed.
    """
    service = turn.service_type.value if turn.service_type else None
    claimed = await conn.fetchval(
        "UPDATE inbox SET processed_at = now(), service_type = coalesce($2, service_type) "
        "WHERE inbox_id = $1 AND processed_at IS NULL RETURNING inbox_id",
        turn.inbox_id,
        service,
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
    ids: list[int] = []
    for r in turn.replies:
        ids.append(
            await conn.fetchval(
                "INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, "
                "inbox_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING outbox_id",
                r.correlation_id,
                r.channel.value,
                r.user_key,
                r.chat_id,
                _clean(r.text),
                r.inbox_id,
            )
        )
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


async def _open_conversation(conn: Conn, o: Opening) -> ConversationStart:
    user_id = await _resolve_user(conn, o.channel, o.user_key, o.display_name)
    row = await _conversation_for(conn, user_id)
    return ConversationStart(
        user_id=user_id,
        conversation=row,
        handoff=await _active_handoff(conn, row.conversation_id),
        pending=tuple(await _pending_inbox(conn, o.user_key, o.pending_limit)),
        recent=tuple(await _recent_turns(conn, row.conversation_id, o.recent_limit)),
    )


async def _resolve_user(
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


async def _conversation_for(conn: Conn, user_id: int) -> ConversationRow:
    r = await conn.fetchrow("SELECT * FROM conversations WHERE user_id = $1", user_id)
    if r is None:
        await conn.execute(
            "INSERT INTO conversations (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
            user_id,
        )
        r = await conn.fetchrow("SELECT * FROM conversations WHERE user_id = $1", user_id)
    return conversation_row(r)


async def _active_handoff(conn: Conn, conversation_id: int) -> HandoffRow | None:
    r = await conn.fetchrow(
        "SELECT * FROM handoffs WHERE conversation_id = $1 AND state <> 'closed'",
        conversation_id,
    )
    return None if r is None else _handoff_row(r)


async def _pending_inbox(conn: Conn, user_key: str | None, limit: int) -> list[InboxRow]:
    if user_key is None:
        rows = await conn.fetch(
            "SELECT * FROM inbox WHERE processed_at IS NULL ORDER BY inbox_id LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
            "SELECT * FROM inbox WHERE processed_at IS NULL AND user_key = $1 "
            "ORDER BY inbox_id LIMIT $2",
            user_key,
            limit,
        )
    return [_inbox_row(r) for r in rows]


async def _recent_turns(conn: Conn, conversation_id: int, limit: int) -> list[Turn]:
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


# -- set-based batches: a constant number of statements per flush, whatever its size ---------
# Each statement locks rows in ascending key order, so two overlapping batches wait for
# each other instead of deadlocking.

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
       h.assigned_to, h.closed_at, h.closed_by, r.directions, r.texts
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


async def _pending_by_key(conn: Conn, limits: dict[str, int]) -> dict[str, list[InboxRow]]:
    wanted = {k: n for k, n in limits.items() if n != 0}
    pending: dict[str, list[InboxRow]] = {}
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
    pending = await _pending_by_key(conn, pending_limits)
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
    UPDATE inbox SET processed_at = now(), service_type = coalesce(t.service_type, inbox.service_type)
    FROM claimable AS l JOIN unnest($1::bigint[], $2::text[]) AS t(inbox_id, service_type)
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
    INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id)
    SELECT correlation_id, channel, user_key, chat_id, text, inbox_id
    FROM unnest($9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::bigint[])
         WITH ORDINALITY AS o(turn, correlation_id, channel, user_key, chat_id, text, inbox_id,
                              ord)
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

    def add(columns: list[list[Any]], *values: Any) -> None:
        for column, value in zip(columns, values, strict=True):
            column.append(value)

    for t in turns:
        service = t.service_type.value if t.service_type else None
        add(claim, t.inbox_id, service)
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
        if t.interaction is not None:
            add(interactions, t.inbox_id, *_interaction_values(t.interaction))
        if t.conversation_type is not None:
            add(touched, t.inbox_id, t.conversation_id, t.conversation_type.value)
        elif t.inbound_text is not None or t.outbound_text is not None:
            add(touched, t.inbox_id, t.conversation_id, None)
    return [*claim, *messages, *outbox, *interactions, *touched]


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


class PostgresStore:
    """``Store`` on PostgreSQL. Build it with ``open_postgres``."""

    def __init__(
        self,
        *,
        pool: Any,
        loop: asyncio.AbstractEventLoop,
        op_timeout_s: float,
        acquire_timeout_s: float,
        max_batch: int,
        flushers: int,
    ) -> None:
        self._pool = pool
        self._loop = loop
        self._op_timeout_s = op_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._release_timeout_s = min(acquire_timeout_s, 1.0)
        self.committer: GroupCommitter[NewInbound, Accepted] = GroupCommitter(
            flush=self._accept_batch,
            max_batch=max_batch,
            flushers=flushers,
            wait_timeout_s=op_timeout_s * 2,
            name="postgres.inbox",
        )
        self.turn_committer: GroupCommitter[TurnRecord, tuple[int, ...] | Exception] = (
            GroupCommitter(
                flush=self._complete_turns,
                max_batch=max_batch,
                flushers=flushers,
                wait_timeout_s=op_timeout_s * 2,
                name="postgres.turns",
            )
        )
        self.open_committer: GroupCommitter[Opening, ConversationStart | Exception] = (
            GroupCommitter(
                flush=self._open_conversations,
                max_batch=max_batch,
                flushers=flushers,
                wait_timeout_s=op_timeout_s * 2,
                name="postgres.opens",
            )
        )

    @property
    def backend(self) -> str:
        return "postgres"

    async def _call(self, work: Work[T], *, retry: bool = True) -> T:
        """Run ``work(conn)`` (asyncio code) on a pooled connection, bounded in time.

        A pooled connection the server dropped (restart, ``pg_terminate_backend``)
        fails on first use; with ``retry`` (idempotent work only) the call runs once
        more on a fresh connection instead of failing.
        """

        async def attempt() -> T:
            conn = await self._pool.acquire(timeout=self._acquire_timeout_s)
            try:
                return await work(conn)
            finally:
                try:
                    # Bounded: a connection that cannot be reset in time is terminated.
                    await self._pool.release(conn, timeout=self._release_timeout_s)
                except Exception as exc:
                    log.info("store.connection_dropped", backend="postgres", error=repr(exc))

        async def in_asyncio() -> T:
            try:
                return await attempt()
            except Exception as exc:
                if not (retry and _connection_lost(exc)):
                    raise
                log.info("store.connection_replaced", backend="postgres", error=repr(exc))
            return await attempt()

        try:
            with trio.fail_after(self._op_timeout_s):
                result: T = await trio_asyncio.aio_as_trio(in_asyncio, loop=self._loop)()
                return result
        except trio.TooSlowError:
            raise StoreUnavailable(f"postgres: no answer within {self._op_timeout_s:g} s") from None
        except _DRIVER_ERRORS as exc:
            raise _as_store_error(exc) from exc

    async def _tx(self, work: Work[T]) -> T:
        async def in_tx(conn: Conn) -> T:
            async with conn.transaction():
                return await work(conn)

        return await self._call(in_tx)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """One value from an ad-hoc query (diagnostics, tests, benchmarks)."""
        return await self._call(lambda conn: conn.fetchval(sql, *args), retry=False)

    def pool_statistics(self) -> dict[str, int]:
        return {
            "size": int(self._pool.get_size()),
            "idle": int(self._pool.get_idle_size()),
            "max_size": int(self._pool.get_max_size()),
        }

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._call(lambda conn: conn.fetchval("SELECT 1"))
        return time.perf_counter() - started

    # -- inbox -----------------------------------------------------------------------
    async def accept(self, message: NewInbound) -> Accepted:
        return await self.committer.submit(message)

    async def accept_one(self, message: NewInbound) -> Accepted:
        """``accept`` without group commit (one statement per call; for comparison)."""
        return (await self._accept_batch([message]))[0]

    async def _accept_batch(self, batch: Sequence[NewInbound]) -> list[Accepted]:
        first: dict[tuple[str, str], int] = {}  # key -> position of its first occurrence
        unique: list[NewInbound] = []
        for position, m in enumerate(batch):
            key = (m.channel.value, m.external_id)
            if key not in first:
                first[key] = position
                unique.append(m)
        columns = (
            [m.correlation_id for m in unique],
            [m.channel.value for m in unique],
            [m.user_key for m in unique],
            [m.chat_id for m in unique],
            [m.external_id for m in unique],
            [_clean(m.text) for m in unique],
            [m.kind.value for m in unique],
            [m.received_at for m in unique],
            [m.display_name for m in unique],
            [m.language_hint for m in unique],
        )

        async def work(conn: Conn) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
            inserted = {(r[1], r[2]): r[0] for r in await conn.fetch(_INSERT_INBOX_BATCH, *columns)}
            existing: dict[tuple[str, str], int] = {}
            if len(inserted) < len(unique):
                missing = [k for k in first if k not in inserted]
                rows = await conn.fetch(
                    _EXISTING_INBOX, [k[0] for k in missing], [k[1] for k in missing]
                )
                existing = {(r[1], r[2]): r[0] for r in rows}
            return inserted, existing

        inserted, existing = await self._call(work)
        results: list[Accepted] = []
        for position, m in enumerate(batch):
            key = (m.channel.value, m.external_id)
            if key in inserted and first[key] == position:
                results.append(Accepted(status=AcceptStatus.NEW, inbox_id=inserted[key]))
            elif key in inserted or key in existing:
                inbox_id = inserted.get(key) or existing[key]
                results.append(Accepted(status=AcceptStatus.DUPLICATE, inbox_id=inbox_id))
            else:
                raise StoreError(f"inbox row for {key} neither inserted nor found")
        return results

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> Sequence[InboxRow]:
        return await self._call(lambda conn: _pending_inbox(conn, user_key, limit))

    async def mark_processed(
        self, inbox_id: int, *, service_type: ServiceType | None = None
    ) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE inbox SET processed_at = coalesce(processed_at, now()), "
                "service_type = coalesce($2, service_type) WHERE inbox_id = $1",
                inbox_id,
                service_type.value if service_type else None,
            )
        )

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        """One transaction; concurrent turns share it, one crossing and one statement.

        Safe to retry on a lost connection: a committed row is not claimed again."""
        result = await self.turn_committer.submit(turn)
        if isinstance(result, Exception):
            raise result
        return result

    async def _complete_turns(
        self, turns: Sequence[TurnRecord]
    ) -> list[tuple[int, ...] | Exception]:
        """The whole batch in one statement; a server error fails one turn alone.

        When the batch's statement fails on the server (one turn's bad row), nothing of
        it was written, and each turn runs again in its own transaction, so the others
        still commit.
        """

        async def work(conn: Conn) -> list[tuple[int, ...] | Exception]:
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

        return await self._call(work)

    # -- outbox ----------------------------------------------------------------------
    async def enqueue_reply(self, reply: NewOutbound) -> int:
        value = await self._call(
            lambda conn: conn.fetchval(
                "INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING outbox_id",
                reply.correlation_id,
                reply.channel.value,
                reply.user_key,
                reply.chat_id,
                _clean(reply.text),
                reply.inbox_id,
            ),
            retry=False,
        )
        return int(value)

    async def pending_outbox(
        self, channel: Channel, *, now: datetime | None = None, limit: int = 100
    ) -> Sequence[OutboxRow]:
        async def work(conn: Conn) -> list[OutboxRow]:
            return [
                _outbox_row(r) for r in await conn.fetch(_PENDING_OUTBOX, channel.value, now, limit)
            ]

        return await self._call(work)

    async def mark_sent(self, outbox_id: int) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE outbox SET sent_at = coalesce(sent_at, now()), attempts = attempts + 1 "
                "WHERE outbox_id = $1",
                outbox_id,
            )
        )

    async def mark_send_failed(
        self, outbox_id: int, *, error: str, retry_at: datetime | None
    ) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, "
                "next_attempt_at = coalesce($3, next_attempt_at), given_up = $4 WHERE outbox_id = $1",
                outbox_id,
                _clean(error[:2000]),
                retry_at,
                retry_at is None,
            )
        )

    # -- users, identities, conversations --------------------------------------------
    async def resolve_user(
        self, channel: Channel, user_key: str, *, display_name: str | None = None
    ) -> int:
        return await self._call(lambda conn: _resolve_user(conn, channel, user_key, display_name))

    async def link_identity(self, user_id: int, channel: Channel, user_key: str) -> None:
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO identities (user_id, channel, user_key) VALUES ($1, $2, $3) "
                "ON CONFLICT (channel, user_key) DO UPDATE SET user_id = excluded.user_id",
                user_id,
                channel.value,
                user_key,
            )
        )

    async def user_for_key(self, user_key: str) -> UserRow | None:
        r = await self._call(
            lambda conn: conn.fetchrow(
                "SELECT u.* FROM users AS u JOIN identities AS i USING (user_id) "
                "WHERE i.user_key = $1 ORDER BY i.identity_id LIMIT 1",
                user_key,
            )
        )
        if r is None:
            return None
        return UserRow(
            user_id=r["user_id"],
            display_name=r["display_name"],
            unreachable=r["unreachable"],
            created_at=r["created_at"],
        )

    async def mark_unreachable(self, user_key: str) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE users SET unreachable = true WHERE user_id IN "
                "(SELECT user_id FROM identities WHERE user_key = $1)",
                user_key,
            )
            await conn.execute(
                "UPDATE outbox SET given_up = true, last_error = 'user unreachable' "
                "WHERE user_key = $1 AND sent_at IS NULL AND NOT given_up",
                user_key,
            )

        await self._tx(work)

    async def conversation_for(self, user_id: int) -> ConversationRow:
        return await self._call(lambda conn: _conversation_for(conn, user_id))

    async def open_conversation(
        self,
        channel: Channel,
        user_key: str,
        *,
        display_name: str | None = None,
        pending_limit: int,
        recent_limit: int,
    ) -> ConversationStart:
        """One crossing of the bridge, one connection; concurrent opens share both."""
        result = await self.open_committer.submit(
            Opening(
                channel=channel,
                user_key=user_key,
                display_name=display_name,
                pending_limit=pending_limit,
                recent_limit=recent_limit,
            )
        )
        if isinstance(result, Exception):
            raise result
        return result

    async def _open_conversations(
        self, openings: Sequence[Opening]
    ) -> list[ConversationStart | Exception]:
        """The whole batch in a few set-based statements; a server error fails one opening alone.

        When the batch's statements fail on the server (one opening's bad value), each
        opening runs again on its own statements, so the others still open; every step
        is idempotent. A lost connection fails (or retries) the whole batch.
        """

        async def work(conn: Conn) -> list[ConversationStart | Exception]:
            try:
                return await _open_batch(conn, openings)
            except asyncpg.PostgresError as exc:
                if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
                    raise
                log.info(
                    "store.batch_split", backend="postgres", batch=len(openings), error=repr(exc)
                )
            results: list[ConversationStart | Exception] = []
            for o in openings:
                try:
                    results.append(await _open_conversation(conn, o))
                except asyncpg.PostgresError as exc:
                    if _connection_lost(exc) or isinstance(exc, _UNAVAILABLE):
                        raise
                    results.append(_as_store_error(exc))
            return results

        return await self._call(work)

    async def set_service_type(self, conversation_id: int, service_type: ServiceType) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE conversations SET service_type = $2, updated_at = now() WHERE conversation_id = $1",
                conversation_id,
                service_type.value,
            )
        )

    async def record_message(
        self,
        *,
        conversation_id: int,
        direction: Direction,
        text: str,
        service_type: ServiceType,
        correlation_id: str,
    ) -> int:
        value = await self._call(
            lambda conn: conn.fetchval(
                "WITH m AS (INSERT INTO messages (conversation_id, direction, text, service_type, "
                "correlation_id) VALUES ($1, $2, $3, $4, $5) RETURNING message_id), "
                "c AS (UPDATE conversations SET updated_at = now() WHERE conversation_id = $1) "
                "SELECT message_id FROM m",
                conversation_id,
                direction.value,
                _clean(text),
                service_type.value,
                correlation_id,
            ),
            retry=False,
        )
        return int(value)

    async def recent_turns(self, conversation_id: int, *, limit: int) -> Sequence[Turn]:
        return await self._call(lambda conn: _recent_turns(conn, conversation_id, limit))

    async def record_interaction(self, interaction: Interaction) -> None:
        await self._call(
            lambda conn: conn.execute(_INSERT_INTERACTION, *_interaction_values(interaction)),
            retry=False,
        )

    # -- channel cursors -------------------------------------------------------------
    async def get_cursor(self, name: str) -> str | None:
        value = await self._call(
            lambda conn: conn.fetchval("SELECT value FROM channel_cursors WHERE name = $1", name)
        )
        return None if value is None else str(value)

    async def set_cursor(self, name: str, value: str) -> None:
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO channel_cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) "
                "DO UPDATE SET value = excluded.value, updated_at = now()",
                name,
                value,
            )
        )

    # -- handoffs --------------------------------------------------------------------
    async def open_handoff(
        self, *, conversation_id: int, user_key: str, reason: str, correlation_id: str
    ) -> HandoffRow:
        async def work(conn: Conn) -> Any:
            await conn.execute(
                "INSERT INTO handoffs (conversation_id, user_key, state, reason, correlation_id) "
                "VALUES ($1, $2, 'open', $3, $4) "
                "ON CONFLICT (conversation_id) WHERE state <> 'closed' DO NOTHING",
                conversation_id,
                user_key,
                _clean(reason),
                correlation_id,
            )
            await conn.execute(
                "UPDATE conversations SET handoff_open = true, updated_at = now() "
                "WHERE conversation_id = $1",
                conversation_id,
            )
            return await conn.fetchrow(
                "SELECT * FROM handoffs WHERE conversation_id = $1 AND state <> 'closed'",
                conversation_id,
            )

        return _handoff_row(await self._tx(work))

    async def active_handoff(self, conversation_id: int) -> HandoffRow | None:
        return await self._call(lambda conn: _active_handoff(conn, conversation_id))

    async def assign_handoff(self, handoff_id: int, *, staff: str) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE handoffs SET state = 'assigned', assigned_to = $2, assigned_at = now() "
                "WHERE handoff_id = $1 AND state <> 'closed'",
                handoff_id,
                staff,
            )
        )

    async def close_handoff(self, handoff_id: int, *, closed_by: str) -> None:
        await self._call(
            lambda conn: conn.execute(
                "WITH h AS (UPDATE handoffs SET state = 'closed', closed_at = now(), closed_by = $2 "
                "WHERE handoff_id = $1 AND state <> 'closed' RETURNING conversation_id) "
                "UPDATE conversations SET handoff_open = false, updated_at = now() "
                "WHERE conversation_id IN (SELECT conversation_id FROM h)",
                handoff_id,
                closed_by,
            )
        )

    async def handoffs_opened_before(self, cutoff: datetime) -> Sequence[HandoffRow]:
        rows = await self._call(
            lambda conn: conn.fetch(
                "SELECT * FROM handoffs WHERE state <> 'closed' AND opened_at < $1 ORDER BY handoff_id",
                cutoff,
            )
        )
        return [_handoff_row(r) for r in rows]

    # -- data protection -------------------------------------------------------------
    async def erase_texts_before(self, cutoff: datetime) -> int:
        """Erase in batches: each batch is its own short transaction under statement_timeout."""
        statements = (
            "UPDATE messages SET text = '' WHERE message_id IN (SELECT message_id FROM messages "
            "WHERE created_at < $1 AND text <> '' LIMIT $2)",
            "UPDATE inbox SET text = '', display_name = NULL WHERE inbox_id IN (SELECT inbox_id "
            "FROM inbox WHERE received_at < $1 AND processed_at IS NOT NULL AND text <> '' LIMIT $2)",
            "UPDATE outbox SET text = '' WHERE outbox_id IN (SELECT outbox_id FROM outbox "
            "WHERE created_at < $1 AND text <> '' AND (sent_at IS NOT NULL OR given_up) LIMIT $2)",
        )
        touched = 0
        for sql in statements:

            async def batch(conn: Conn, sql: str = sql) -> int:
                return int(str(await conn.execute(sql, cutoff, _ERASE_BATCH)).rsplit(" ", 1)[-1])

            while True:
                count = await self._call(batch)
                touched += count
                if count < _ERASE_BATCH:
                    break
        return touched

    async def forget_user(self, user_id: int) -> int:
        async def work(conn: Conn) -> int:
            keys = [
                r[0]
                for r in await conn.fetch(
                    "SELECT user_key FROM identities WHERE user_id = $1", user_id
                )
            ]
            statuses = [
                await conn.execute(
                    "DELETE FROM messages WHERE conversation_id IN "
                    "(SELECT conversation_id FROM conversations WHERE user_id = $1)",
                    user_id,
                ),
                await conn.execute("DELETE FROM outbox WHERE user_key = ANY($1::text[])", keys),
                await conn.execute("DELETE FROM inbox WHERE user_key = ANY($1::text[])", keys),
                await conn.execute(
                    "UPDATE handoffs SET user_key = 'forgotten', reason = '' "
                    "WHERE user_key = ANY($1::text[])",
                    keys,
                ),
                await conn.execute("DELETE FROM identities WHERE user_id = $1", user_id),
                await conn.execute(
                    "UPDATE users SET display_name = NULL, forgotten_at = now() WHERE user_id = $1",
                    user_id,
                ),
            ]
            return sum(int(str(s).rsplit(" ", 1)[-1]) for s in statuses)

        return await self._tx(work)

    async def aclose(self) -> None:
        """Close the pool gracefully (bounded), then terminate what is left."""
        if self._pool.is_closing():
            return
        try:
            with trio.move_on_after(self._op_timeout_s) as scope:
                await trio_asyncio.aio_as_trio(self._pool.close, loop=self._loop)()
        except Exception as exc:  # closing a pool to a dead server must not mask the real error
            log.warning("store.close_failed", backend="postgres", error=repr(exc))
        else:
            if not scope.cancelled_caught:
                return
        self._pool.terminate()


async def _keep_session(conn: Conn) -> None:
    """Release a connection without asyncpg's reset query: one round trip less per call.

    The pool still rolls back an open transaction first. Nothing here changes session
    state that the reset would undo: no SET, LISTEN, cursors or session advisory locks
    (migrations take a transaction-scoped lock on a connection of their own).
    """


async def _schema_version(conn: Conn) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def _apply_migrations(conn: Conn) -> list[int]:
    done: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(SCHEMA_MIGRATIONS_POSTGRES)
        applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations("postgres"):
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            done.append(migration.version)
    return done


async def _with_connection(dsn: str, timeout_s: float, work: Work[T]) -> T:
    async def in_asyncio() -> T:
        conn = await asyncpg.connect(dsn, timeout=timeout_s, command_timeout=timeout_s * 6)
        try:
            return await work(conn)
        finally:
            await conn.close(timeout=timeout_s)

    try:
        async with asyncio_loop() as loop:
            result: T = await trio_asyncio.aio_as_trio(in_asyncio, loop=loop)()
            return result
    except _DRIVER_ERRORS as exc:
        raise _as_store_error(exc) from exc


async def migrate_postgres(settings: StoreSettings) -> list[int]:
    """Apply the missing migrations in one transaction; return the versions applied."""
    if settings.database_url is None:
        raise ValueError("DATABASE_URL is unset: there is no PostgreSQL database to migrate")
    applied = await _with_connection(
        settings.database_url, settings.command_timeout_s, _apply_migrations
    )
    if applied:
        log.info("store.migrated", backend="postgres", versions=applied)
    return applied


async def execute_admin(dsn: str, *statements: str, timeout_s: float = 10.0) -> None:
    """Run statements on a fresh connection outside any pool (test and benchmark setup)."""

    async def work(conn: Conn) -> None:
        for sql in statements:
            await conn.execute(sql)

    await _with_connection(dsn, timeout_s, work)


@asynccontextmanager
async def open_postgres(
    settings: StoreSettings, *, max_batch: int = 256, flushers: int | None = None
) -> AsyncIterator[PostgresStore]:
    """Open the pool, check the schema version, run the group-commit flushers; close on exit.

    Two flushers (one batch committing while the next fills) measured best; more
    split the load into smaller batches. One pooled connection stays free for the
    other queries.

    Raises ``StoreUnavailable`` when the server cannot be reached and
    ``SchemaOutdated`` when ``concierge migrate`` has not been run.
    """
    if settings.database_url is None:
        raise ValueError("DATABASE_URL is unset: open_postgres needs a PostgreSQL DSN")
    dsn = settings.database_url
    timeout_s = settings.command_timeout_s
    server_settings = {
        "application_name": "concierge",
        "statement_timeout": str(int(settings.statement_timeout_s * 1000)),
        "idle_in_transaction_session_timeout": str(
            int(max(settings.statement_timeout_s * 2, 10) * 1000)
        ),
    }
    needed = latest_version("postgres")
    async with asyncio_loop() as loop:

        async def create() -> Any:
            return await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=settings.pool_size,
                timeout=timeout_s,
                command_timeout=timeout_s,
                server_settings=server_settings,
                max_inactive_connection_lifetime=300.0,
                reset=_keep_session,
            )

        try:
            with trio.fail_after(timeout_s * 2):
                pool = await trio_asyncio.aio_as_trio(create, loop=loop)()
        except trio.TooSlowError:
            raise StoreUnavailable(f"postgres: no connection within {timeout_s * 2:g} s") from None
        except _DRIVER_ERRORS as exc:
            raise _as_store_error(exc) from exc
        store = PostgresStore(
            # asyncpg's own timeouts (connect, command, release) fire first; this
            # backstop only ends a call they did not (several statements on a hung server).
            pool=pool,
            loop=loop,
            op_timeout_s=timeout_s * 3,
            acquire_timeout_s=timeout_s,
            max_batch=max_batch,
            flushers=flushers if flushers is not None else max(1, min(settings.pool_size - 1, 2)),
        )
        try:
            found = await store._call(_schema_version)
            if found < needed:
                raise SchemaOutdated(found=found, needed=needed)
            if found > needed:
                log.warning("store.schema_newer", backend="postgres", found=found, needed=needed)
            log.info(
                "store.opened",
                backend="postgres",
                schema_version=found,
                pool_size=settings.pool_size,
            )
            async with (
                flushing(store.committer),
                flushing(store.turn_committer),
                flushing(store.open_committer),
            ):
                yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
            log.info("store.closed", backend="postgres")
