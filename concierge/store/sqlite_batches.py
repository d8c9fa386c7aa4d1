"""Group-committed batches on SQLite: accepts, conversation opens and completed turns.

A batch runs as a fixed handful of set-based statements whatever its size, the batch
bound as one JSON parameter and read back with ``json_each``: every statement lets go
of the GIL, and under a burst taking it back from the busy event loop was most of the
worker's time. The statements succeed or fail for the whole batch; when one item
fails it, the batch runs again item by item, each in a savepoint, so that item fails
alone.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import structlog

from concierge.protocol import (
    Accepted,
    AcceptStatus,
    ConversationStart,
    Direction,
    InboundMessage,
    Role,
    ServiceType,
    Turn,
    TurnRecord,
)
from concierge.store.errors import StoreError
from concierge.store.rows import Opening
from concierge.store.sqlite_driver import (
    conversation_row as _conversation_row,
    handoff_row as _handoff_row,
    inbox_row as _inbox_row,
    interaction_values as _interaction_values,
    ts,
    tx as _tx,
)
from concierge.store.sqlite_per_item import (
    open_conversation as _open_conversation,
    write_turn as _write_turn,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")


class _NotBatchable(ValueError):
    """A batch the JSON parameter would not carry intact: it goes item by item."""


def _json(value: object) -> str:
    """A batch as one bound parameter, read back with ``json_each``."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:  # SQLite's JSON functions end a text at its first NUL
        raise _NotBatchable("a NUL character in a text")
    return text


def _scalar(conn: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> Any:
    """The one value of a one-row query (a batch's results come back as one JSON value)."""
    return conn.execute(sql, params).fetchone()[0]


# A batch's statements each return at most one row: a row fetched is one more release
# and re-acquisition of the GIL, which under a burst waits on the busy event loop. New
# ids are told apart from old ones by the table's largest id read first: AUTOINCREMENT
# gives a new row an id above any the table has had.

# -- accepts ---------------------------------------------------------------------------------

_INBOX_TOP = "SELECT coalesce(max(inbox_id), 0) FROM inbox"

_INSERT_INBOX_ROW = """
INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind,
                   received_at, display_name, language_hint, reply_to, accepted_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (channel, external_id) DO NOTHING
RETURNING inbox_id
"""

_INSERT_INBOX = """
INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind,
                   received_at, display_name, language_hint, reply_to, accepted_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, ?1
FROM json_each(?2) WHERE true ORDER BY key
ON CONFLICT (channel, external_id) DO NOTHING
"""

_INBOX_IDS = """
SELECT json_group_array(json_array(j.key, i.inbox_id))
FROM json_each(?) AS j
JOIN inbox AS i ON i.channel = j.value ->> 1 AND i.external_id = j.value ->> 4
"""


def accept_rows(
    conn: sqlite3.Connection, batch: Sequence[InboundMessage], now: str
) -> list[Accepted]:
    """Insert a batch's new inbox rows in order; the first of a key is NEW, the rest DUPLICATE."""
    positions: dict[tuple[str, str], int] = {}
    values: list[list[object]] = []  # one per key, in order of first arrival
    at: list[int] = []
    for m in batch:
        key = (m.channel.value, m.external_id)
        if key not in positions:
            positions[key] = len(values)
            values.append(
                [
                    m.correlation_id,
                    m.channel.value,
                    m.user_key,
                    m.chat_id,
                    m.external_id,
                    m.text,
                    m.kind.value,
                    ts(m.received_at),
                    m.display_name,
                    m.language_hint,
                    m.reply_to,
                ]
            )
        at.append(positions[key])
    try:
        stored = _insert_inbox(conn, values, now)
    except _NotBatchable:
        stored = _insert_inbox_each(conn, values, now)
    answered: set[int] = set()
    results: list[Accepted] = []
    for position in at:
        new, inbox_id = stored[position]
        status = AcceptStatus.NEW if new and position not in answered else AcceptStatus.DUPLICATE
        answered.add(position)
        results.append(Accepted(status=status, inbox_id=inbox_id))
    return results


def _insert_inbox(
    conn: sqlite3.Connection, values: list[list[object]], now: str
) -> list[tuple[bool, int]]:
    """(inserted now, inbox id) per row of ``values``, whatever the batch size in 3 statements."""
    payload = _json(values)
    top = _scalar(conn, _INBOX_TOP)
    conn.execute(_INSERT_INBOX, (now, payload))
    ids: dict[int, int] = dict(json.loads(_scalar(conn, _INBOX_IDS, (payload,))))
    return [(ids[p] > top, ids[p]) for p in range(len(values))]


def _insert_inbox_each(
    conn: sqlite3.Connection, values: list[list[object]], now: str
) -> list[tuple[bool, int]]:
    """``_insert_inbox`` a row at a time, for values the JSON parameter cannot carry."""
    stored: list[tuple[bool, int]] = []
    for row in values:
        inserted = conn.execute(_INSERT_INBOX_ROW, (*row, now)).fetchone()
        if inserted is not None:
            stored.append((True, int(inserted[0])))
            continue
        existing = conn.execute(
            "SELECT inbox_id FROM inbox WHERE channel = ? AND external_id = ?", (row[1], row[4])
        ).fetchone()
        stored.append((False, int(existing[0])))
    return stored


# -- conversation opens ----------------------------------------------------------------------

_TURN_ROLES = {Direction.INBOUND.value: Role.USER, Direction.OUTBOUND.value: Role.ASSISTANT}


_OPEN_FIND = """
SELECT (SELECT coalesce(max(user_id), 0) FROM users),
       (SELECT json_group_array(json_array(j.key, i.user_id, c.conversation_id IS NOT NULL,
                                           u.unreachable, u.display_name))
        FROM json_each(?) AS j
        JOIN identities AS i ON i.channel = j.value ->> 0 AND i.user_key = j.value ->> 1
        JOIN users AS u ON u.user_id = i.user_id
        LEFT JOIN conversations AS c ON c.user_id = i.user_id)
"""

_OPEN_NEW_USERS = """
INSERT INTO users (display_name, created_at)
SELECT value ->> 2, ?1 FROM json_each(?2) ORDER BY key
"""

# The users just inserted, in id order, are the keys in insertion order.
_OPEN_NEW_IDENTITIES = """
INSERT INTO identities (user_id, channel, user_key, created_at)
SELECT u.user_id, j.value ->> 0, j.value ->> 1, ?1
FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS n
      FROM users WHERE user_id > ?2) AS u
JOIN json_each(?3) AS j ON j.key = u.n
ORDER BY u.n
"""

_OPEN_TOUCH_USERS = """
UPDATE users SET unreachable = 0, display_name = coalesce(j.value ->> 1, users.display_name)
FROM json_each(?) AS j WHERE users.user_id = j.value ->> 0
"""

_OPEN_NEW_CONVERSATIONS = """
INSERT INTO conversations (user_id, created_at, updated_at)
SELECT i.user_id, ?1, ?1
FROM json_each(?2) AS j
JOIN identities AS i ON i.channel = j.value ->> 0 AND i.user_key = j.value ->> 1
WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.user_id = i.user_id)
GROUP BY i.user_id ORDER BY min(j.key)
ON CONFLICT (user_id) DO NOTHING
"""

# Per key: its user, conversation, open handoff, oldest pending rows and newest turns,
# each list cut to the largest limit in the batch (each opening takes its own share).
_OPEN_READ = """
SELECT json_group_array(json_array(
    j.key,
    i.user_id,
    json_object('conversation_id', c.conversation_id, 'user_id', c.user_id,
                'service_type', c.service_type, 'handoff_open', c.handoff_open,
                'updated_at', c.updated_at),
    json((SELECT json_object('handoff_id', h.handoff_id, 'conversation_id', h.conversation_id,
                             'user_key', h.user_key, 'state', h.state, 'reason', h.reason,
                             'correlation_id', h.correlation_id, 'opened_at', h.opened_at,
                             'closed_at', h.closed_at, 'closed_by', h.closed_by,
                             'urgent', h.urgent)
          FROM handoffs AS h WHERE h.conversation_id = c.conversation_id AND h.state <> 'closed')),
    json((SELECT json_group_array(json_object(
                     'inbox_id', b.inbox_id, 'correlation_id', b.correlation_id,
                     'channel', b.channel, 'user_key', b.user_key, 'chat_id', b.chat_id,
                     'external_id', b.external_id, 'text', b.text, 'kind', b.kind,
                     'received_at', b.received_at, 'display_name', b.display_name,
                     'language_hint', b.language_hint, 'reply_to', b.reply_to))
          FROM inbox AS b
          WHERE b.inbox_id IN (SELECT inbox_id FROM inbox
                               WHERE processed_at IS NULL AND user_key = j.value ->> 1
                               ORDER BY inbox_id LIMIT ?2))),
    json((SELECT json_group_array(json_array(m.message_id, m.direction, m.text))
          FROM messages AS m
          WHERE m.message_id IN (SELECT message_id FROM messages
                                 WHERE conversation_id = c.conversation_id AND text <> ''
                                 ORDER BY message_id DESC LIMIT ?3)))))
FROM json_each(?1) AS j
JOIN identities AS i ON i.channel = j.value ->> 0 AND i.user_key = j.value ->> 1
JOIN conversations AS c ON c.user_id = i.user_id
"""


def _largest_limit(limits: Iterable[int]) -> int:
    """The batch's SQL limit: a negative one (no limit, as in SQLite) wins."""
    given = list(limits)
    return -1 if any(n < 0 for n in given) else max(given, default=0)


def _first(items: list[T], limit: int) -> list[T]:
    return items if limit < 0 else items[:limit]


def _last(items: list[T], limit: int) -> list[T]:
    return items if limit < 0 else items[max(len(items) - limit, 0) :]


def open_rows(
    conn: sqlite3.Connection, openings: Sequence[Opening], now: str
) -> list[ConversationStart]:
    """A batch of ``_open_conversation`` in a handful of statements; a key twice shares its rows."""
    positions: dict[tuple[str, str], int] = {}
    keys: list[list[Any]] = []  # channel, user_key, the last display name given
    at: list[int] = []
    for o in openings:
        key = (o.channel.value, o.user_key)
        if key not in positions:
            positions[key] = len(keys)
            keys.append([o.channel.value, o.user_key, None])
        position = positions[key]
        if o.display_name is not None:
            keys[position][2] = o.display_name
        at.append(position)
    payload = _json(keys)
    top, found_json = conn.execute(_OPEN_FIND, (payload,)).fetchone()
    found = {f[0]: f for f in json.loads(found_json)}
    missing = [k for position, k in enumerate(keys) if position not in found]
    if missing:
        conn.execute(_OPEN_NEW_USERS, (now, _json(missing)))
        conn.execute(_OPEN_NEW_IDENTITIES, (now, top, _json(missing)))
    touched = _touched_users(openings, at, found)
    if touched:
        conn.execute(_OPEN_TOUCH_USERS, (_json(touched),))
    unhoused = [
        k for position, k in enumerate(keys) if position not in found or not found[position][2]
    ]
    if unhoused:
        conn.execute(_OPEN_NEW_CONVERSATIONS, (now, _json(unhoused)))
    read = conn.execute(
        _OPEN_READ,
        (
            payload,
            _largest_limit(o.pending_limit for o in openings),
            _largest_limit(o.recent_limit for o in openings),
        ),
    ).fetchone()[0]
    started = {r[0]: r for r in json.loads(read)}
    return [_started(started[position], o) for position, o in zip(at, openings, strict=True)]


def _touched_users(
    openings: Sequence[Opening], at: Sequence[int], found: dict[int, list[Any]]
) -> list[list[Any]]:
    """Existing users whose row the batch changes, with the display name to store.

    As the openings one after another would leave it: reachable again, and named
    by the last display name given (the name kept when none was).
    """
    state: dict[int, tuple[int, str | None]] = {}
    names: dict[int, str] = {}
    for o, position in zip(openings, at, strict=True):
        if position not in found:
            continue
        _, user_id, _, unreachable, current = found[position]
        state[user_id] = (unreachable, current)
        if o.display_name is not None:
            names[user_id] = o.display_name
    return [
        [user_id, names.get(user_id)]
        for user_id, (unreachable, current) in state.items()
        if unreachable or names.get(user_id, current) != current
    ]


def _started(read: list[Any], o: Opening) -> ConversationStart:
    _, user_id, conversation, handoff, pending, recent = read
    pending.sort(key=lambda r: r["inbox_id"])
    recent.sort(key=lambda r: r[0])
    return ConversationStart(
        user_id=user_id,
        conversation=_conversation_row(conversation),
        handoff=None if handoff is None else _handoff_row(handoff),
        pending=tuple(_inbox_row(r) for r in _first(pending, o.pending_limit)),
        recent=tuple(
            Turn(role=_TURN_ROLES[direction], text=text)
            for _, direction, text in _last(recent, o.recent_limit)
        ),
    )


# -- completed turns -------------------------------------------------------------------------

_TURN_CLAIMABLE = """
SELECT (SELECT coalesce(max(outbox_id), 0) FROM outbox),
       (SELECT json_group_array(inbox_id) FROM inbox
        WHERE inbox_id IN (SELECT value ->> 0 FROM json_each(?)) AND processed_at IS NULL)
"""

_TURN_CLAIM = """
UPDATE inbox SET processed_at = ?1, service_type = coalesce(j.value ->> 1, inbox.service_type)
FROM json_each(?2) AS j
WHERE inbox.inbox_id = j.value ->> 0 AND inbox.processed_at IS NULL
"""

_TURN_MESSAGES = """
INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id, created_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ?1
FROM json_each(?2) ORDER BY key
"""

_TURN_OUTBOX = """
INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, handoff_id,
                    created_at, next_attempt_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, ?1, ?1
FROM json_each(?2) ORDER BY key
"""

_TURN_OUTBOX_IDS = "SELECT json_group_array(outbox_id) FROM outbox WHERE outbox_id > ?"

_TURN_INTERACTIONS = """
INSERT INTO interactions (correlation_id, conversation_id, provider, model, key_alias,
                          latency_s, tokens_in, tokens_out, outcome, service_type, created_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10
FROM json_each(?) ORDER BY key
"""

_TURN_CONVERSATIONS = """
UPDATE conversations SET service_type = coalesce(j.value ->> 1, conversations.service_type),
                         updated_at = ?1
FROM json_each(?2) AS j WHERE conversations.conversation_id = j.value ->> 0
"""


def turn_rows(
    conn: sqlite3.Connection, turns: Sequence[TurnRecord], now: str
) -> list[tuple[int, ...]]:
    """A batch of ``_write_turn`` in a handful of statements, rows in batch order.

    An inbox row named twice is claimed by its first turn; a turn whose row was
    processed before writes nothing and gets ``()``.
    """
    claims: dict[int, list[Any]] = {}  # inbox id -> [inbox id, service type]: first turn's
    for turn in turns:
        if turn.inbox_id not in claims:
            claims[turn.inbox_id] = [turn.inbox_id, _service(turn.service_type)]
    payload = _json(list(claims.values()))
    top, claimable_json = conn.execute(_TURN_CLAIMABLE, (payload,)).fetchone()
    claimable = set(json.loads(claimable_json))
    if not claimable:
        return [() for _ in turns]
    conn.execute(_TURN_CLAIM, (now, payload))
    claimed: list[TurnRecord | None] = []
    for turn in turns:
        mine = turn.inbox_id in claimable
        claimable.discard(turn.inbox_id)
        claimed.append(turn if mine else None)
    written = [t for t in claimed if t is not None]
    messages = [
        [t.conversation_id, direction.value, text, _service(t.service_type), t.correlation_id]
        for t in written
        for direction, text in (
            (Direction.INBOUND, t.inbound_text),
            (Direction.OUTBOUND, t.outbound_text),
        )
        if text is not None
    ]
    if messages:
        conn.execute(_TURN_MESSAGES, (now, _json(messages)))
    replies = [
        [r.correlation_id, r.channel.value, r.user_key, r.chat_id, r.text, r.inbox_id, r.handoff_id]
        for t in written
        for r in t.replies
    ]
    outbox_ids: list[int] = []
    if replies:
        conn.execute(_TURN_OUTBOX, (now, _json(replies)))
        outbox_ids = sorted(json.loads(_scalar(conn, _TURN_OUTBOX_IDS, (top,))))
        if len(outbox_ids) != len(replies):
            raise StoreError(f"{len(replies)} outbox rows written, {len(outbox_ids)} found")
    interactions = [list(_interaction_values(t.interaction)) for t in written if t.interaction]
    if interactions:
        conn.execute(_TURN_INTERACTIONS, (_json(interactions),))
    touched = _touched_conversations(written)
    if touched:
        conn.execute(_TURN_CONVERSATIONS, (now, _json(touched)))
    ids = iter(outbox_ids)
    return [() if t is None else tuple(next(ids) for _ in t.replies) for t in claimed]


def _service(service_type: ServiceType | None) -> str | None:
    return None if service_type is None else service_type.value


def _touched_conversations(turns: Sequence[TurnRecord]) -> list[list[Any]]:
    """Conversations the turns update, with the type to set (``None`` keeps it): the last given."""
    touched: dict[int, str | None] = {}
    for t in turns:
        if t.conversation_id is None:
            continue
        if t.conversation_type is not None:
            touched[t.conversation_id] = t.conversation_type.value
        elif t.inbound_text is not None or t.outbound_text is not None:
            touched.setdefault(t.conversation_id, None)
    return [[conversation_id, kind] for conversation_id, kind in touched.items()]


# -- when one item fails the batch -----------------------------------------------------------


def whole_or_each(
    conn: sqlite3.Connection,
    whole: Callable[[sqlite3.Connection], list[R]],
    each: Callable[[sqlite3.Connection], list[R | Exception]],
    *,
    batch: str,
) -> list[R | Exception]:
    """A batch's set-based transaction; if one of its items fails it, the batch item by item.

    The set-based statements succeed or fail for the whole batch; replaying it one
    savepoint per item keeps a bad item (a constraint it breaks) its own failure. An
    ``OperationalError`` (disk, lock) is the database's: it fails the batch.
    """
    try:
        results: list[R | Exception] = list(_tx(conn, whole))
    except sqlite3.OperationalError:
        raise
    except Exception as exc:
        log.warning("store.batch_replayed_per_item", batch=batch, error=repr(exc))
        return _tx(conn, each)
    return results


def in_savepoints(
    conn: sqlite3.Connection, items: Sequence[Item], write: Callable[[sqlite3.Connection, Item], R]
) -> list[R | Exception]:
    """Several writes in the caller's transaction, each in a savepoint: a bad one fails alone.

    An ``OperationalError`` (disk, lock) is the database's, not the item's: it ends the
    whole transaction.
    """
    results: list[R | Exception] = []
    for item in items:
        conn.execute("SAVEPOINT item")
        try:
            results.append(write(conn, item))
        except sqlite3.OperationalError:
            raise
        except Exception as exc:
            conn.execute("ROLLBACK TO item")
            results.append(StoreError(f"sqlite: {exc}") if isinstance(exc, sqlite3.Error) else exc)
        conn.execute("RELEASE item")
    return results


def flush_openings(
    conn: sqlite3.Connection, openings: Sequence[Opening], now: str
) -> list[ConversationStart | Exception]:
    """The whole batch in a handful of statements; if one opening fails it, each alone."""
    return whole_or_each(
        conn,
        lambda c: open_rows(c, openings, now),
        lambda c: in_savepoints(c, openings, lambda c, o: _open_conversation(c, o, now)),
        batch="opens",
    )


def flush_turns(
    conn: sqlite3.Connection, turns: Sequence[TurnRecord], now: str
) -> list[tuple[int, ...] | Exception]:
    """The whole batch in a handful of statements; if one turn fails it, each alone."""
    return whole_or_each(
        conn,
        lambda c: turn_rows(c, turns, now),
        lambda c: in_savepoints(c, turns, lambda c, turn: _write_turn(c, turn, now)),
        batch="turns",
    )
