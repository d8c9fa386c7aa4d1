"""The embedded durable store: one SQLite file, stdlib ``sqlite3`` in a worker thread.

One connection, used by one worker thread at a time, in WAL mode with
``synchronous=FULL``: an inbox row is the promise behind a 2xx to the
platform, which will not deliver again, so a commit must survive power loss, not
only a crash of the process (``NORMAL`` in WAL mode may lose the last commits on
power loss). Group commit pays the extra fsync once per batch. Calls that queue
up while the thread is busy go to it together in one hop (each still its own
transaction): under a burst, the hops, not the SQL, were most of the cost. A batch
of accepts, opens or turns runs as a few set-based statements whatever its size,
the batch bound as one JSON parameter: every statement lets go of the GIL, and
under a burst taking it back from the busy event loop was most of the worker's
time. The file migrates itself at open.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog
import trio

from concierge.protocol import Channel, Role, ServiceType, Turn, utcnow
from concierge.store import rows
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
from concierge.store.errors import StoreError, StoreUnavailable
from concierge.store.group_commit import GroupCommitter, flushing
from concierge.store.migrate import apply_sqlite
from concierge.store.rows import Opening

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_NAME = "concierge.sqlite3"


def ts(value: datetime) -> str:
    """A fixed-width UTC text instant that sorts like the instant it encodes."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: store instants must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


_inbox_row = partial(rows.inbox_row, instant=_dt)
_outbox_row = partial(rows.outbox_row, instant=_dt)
_handoff_row = partial(rows.handoff_row, instant=_dt)
_conversation_row = partial(rows.conversation_row, instant=_dt)
_interaction_values = partial(rows.interaction_values, stored=ts)


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn


def _tx(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


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

_INBOX_TOP = "SELECT coalesce(max(inbox_id), 0) FROM inbox"

_INSERT_INBOX_ROW = """
INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind,
                   received_at, display_name, language_hint, accepted_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (channel, external_id) DO NOTHING
RETURNING inbox_id
"""

_INSERT_INBOX = """
INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind,
                   received_at, display_name, language_hint, accepted_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 8, value ->> 9, ?1
FROM json_each(?2) WHERE true ORDER BY key
ON CONFLICT (channel, external_id) DO NOTHING
"""

_INBOX_IDS = """
SELECT json_group_array(json_array(j.key, i.inbox_id))
FROM json_each(?) AS j
JOIN inbox AS i ON i.channel = j.value ->> 1 AND i.external_id = j.value ->> 4
"""


def _accept_rows(conn: sqlite3.Connection, batch: Sequence[NewInbound], now: str) -> list[Accepted]:
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


_INSERT_OUTBOX = (
    "INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, "
    "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING outbox_id"
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

_PENDING_OUTBOX = """
SELECT * FROM outbox AS o
WHERE o.channel = ? AND o.sent_at IS NULL AND o.given_up = 0 AND o.next_attempt_at <= ?
  AND NOT EXISTS (
      SELECT 1 FROM outbox AS e
      WHERE e.user_key = o.user_key AND e.outbox_id < o.outbox_id
        AND e.sent_at IS NULL AND e.given_up = 0 AND e.next_attempt_at > ?)
ORDER BY o.outbox_id
LIMIT ?
"""


def _write_turn(conn: sqlite3.Connection, turn: TurnRecord, now: str) -> tuple[int, ...]:
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
        int(
            conn.execute(
                _INSERT_OUTBOX,
                (
                    r.correlation_id,
                    r.channel.value,
                    r.user_key,
                    r.chat_id,
                    r.text,
                    r.inbox_id,
                    now,
                    now,
                ),
            ).fetchone()[0]
        )
        for r in turn.replies
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


R = TypeVar("R")
Item = TypeVar("Item")


def _in_savepoints(
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


def _open_conversation(conn: sqlite3.Connection, o: Opening, now: str) -> ConversationStart:
    user_id = _resolve_user(conn, o.channel, o.user_key, o.display_name, now)
    row = _conversation_for(conn, user_id, now)
    return ConversationStart(
        user_id=user_id,
        conversation=row,
        handoff=_active_handoff(conn, row.conversation_id),
        pending=tuple(_pending_inbox(conn, o.user_key, o.pending_limit)),
        recent=tuple(_recent_turns(conn, row.conversation_id, o.recent_limit)),
    )


def _resolve_user(
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


def _conversation_for(conn: sqlite3.Connection, user_id: int, now: str) -> ConversationRow:
    # Inserting only when missing: an insert the conflict clause drops still uses up an id.
    conn.execute(
        "INSERT INTO conversations (user_id, created_at, updated_at) SELECT ?1, ?2, ?2 "
        "WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE user_id = ?1) "
        "ON CONFLICT (user_id) DO NOTHING",
        (user_id, now),
    )
    r = conn.execute("SELECT * FROM conversations WHERE user_id = ?", (user_id,)).fetchone()
    return _conversation_row(r)


def _active_handoff(conn: sqlite3.Connection, conversation_id: int) -> HandoffRow | None:
    r = conn.execute(
        "SELECT * FROM handoffs WHERE conversation_id = ? AND state <> 'closed'",
        (conversation_id,),
    ).fetchone()
    return None if r is None else _handoff_row(r)


def _pending_inbox(conn: sqlite3.Connection, user_key: str | None, limit: int) -> list[InboxRow]:
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


def _recent_turns(conn: sqlite3.Connection, conversation_id: int, limit: int) -> list[Turn]:
    rows = conn.execute(
        "SELECT direction, text FROM messages WHERE conversation_id = ? AND text <> '' "
        "ORDER BY message_id DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [
        Turn(role=Role.USER if r[0] == Direction.INBOUND.value else Role.ASSISTANT, text=r[1])
        for r in reversed(rows)
    ]


_TURN_ROLES = {Direction.INBOUND.value: Role.USER, Direction.OUTBOUND.value: Role.ASSISTANT}


def _whole_or_each(
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
                             'assigned_to', h.assigned_to, 'closed_at', h.closed_at,
                             'closed_by', h.closed_by)
          FROM handoffs AS h WHERE h.conversation_id = c.conversation_id AND h.state <> 'closed')),
    json((SELECT json_group_array(json_object(
                     'inbox_id', b.inbox_id, 'correlation_id', b.correlation_id,
                     'channel', b.channel, 'user_key', b.user_key, 'chat_id', b.chat_id,
                     'external_id', b.external_id, 'text', b.text, 'kind', b.kind,
                     'received_at', b.received_at, 'display_name', b.display_name,
                     'language_hint', b.language_hint, 'processed_at', b.processed_at))
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


def _open_rows(
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
INSERT INTO outbox (correlation_id, channel, user_key, chat_id, text, inbox_id, created_at,
                    next_attempt_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, ?1, ?1
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


def _turn_rows(
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
        [r.correlation_id, r.channel.value, r.user_key, r.chat_id, r.text, r.inbox_id]
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


class _Call:
    """One caller's work on the connection, and what came of it."""

    __slots__ = ("error", "result", "taken", "task", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        self.work = work
        self.task = trio.lowlevel.current_task()
        self.taken = False
        self.result: Any = None
        self.error: Exception | None = None


def _run_calls(conn: sqlite3.Connection, calls: Sequence[_Call]) -> None:
    """In the worker thread: each call alone, its error kept for its own caller."""
    for call in calls:
        try:
            call.result = call.work(conn)
        except Exception as exc:
            call.error = exc


def _mapped(error: Exception) -> Exception:
    if isinstance(error, sqlite3.OperationalError):
        return StoreUnavailable(f"sqlite: {error}")
    if isinstance(error, sqlite3.Error):
        return StoreError(f"sqlite: {error}")
    return error


class _WorkerHops:
    """Takes queued calls to the worker thread, as many per hop as have queued (up to a cap).

    One task owns the connection's thread; callers queue and wait for their own
    call. Like ``trio.to_thread.run_sync``, a caller cancelled before its hop leaves
    without running anything, and one cancelled during its hop gets the cancellation
    once the hop is back (the work did run).
    """

    def __init__(self, conn: sqlite3.Connection, *, max_calls: int) -> None:
        self._conn = conn
        self._max_calls = max_calls
        self._queue: deque[_Call] = deque()
        self._wakeup = trio.Event()
        self.running = False
        self.hops = 0
        self.calls = 0

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if not self.running:
            raise StoreUnavailable("the sqlite store is closed")
        call = _Call(work)
        self._queue.append(call)
        self._wakeup.set()

        def abort(_: object) -> trio.lowlevel.Abort:
            if call.taken:
                return trio.lowlevel.Abort.FAILED  # the hop wakes us when it is back
            self._queue.remove(call)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if call.error is not None:
            raise _mapped(call.error) from call.error
        result: T = call.result
        return result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the queue until cancelled; fail whatever is still queued on the way out."""
        self.running = True
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._queue:
                    await self._hop()
        finally:
            self.running = False
            while self._queue:
                call = self._queue.popleft()
                call.error = StoreUnavailable("the sqlite store is closed")
                trio.lowlevel.reschedule(call.task)

    async def _hop(self) -> None:
        calls = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_calls))]
        for call in calls:
            call.taken = True
        try:
            await trio.to_thread.run_sync(_run_calls, self._conn, calls)
        finally:
            self.hops += 1
            self.calls += len(calls)
            for call in calls:
                trio.lowlevel.reschedule(call.task)


@asynccontextmanager
async def _serving(hops: _WorkerHops) -> AsyncIterator[None]:
    """Run ``hops`` around a block; its own exception comes out unwrapped."""
    single: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hops.run)
            yield
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        raise single


class SqliteStore:
    """``Store`` on one SQLite file. Build it with ``open_sqlite``."""

    def __init__(self, *, conn: sqlite3.Connection, path: Path, max_batch: int) -> None:
        self._conn = conn
        self.path = path
        self.hops = _WorkerHops(conn, max_calls=max_batch)
        self._closed = False
        self.committer: GroupCommitter[NewInbound, Accepted] = GroupCommitter(
            flush=self._accept_batch, max_batch=max_batch, flushers=1, name="sqlite.inbox"
        )
        self.turn_committer: GroupCommitter[TurnRecord, tuple[int, ...] | Exception] = (
            GroupCommitter(
                flush=self._complete_turns, max_batch=max_batch, flushers=1, name="sqlite.turns"
            )
        )
        self.open_committer: GroupCommitter[Opening, ConversationStart | Exception] = (
            GroupCommitter(
                flush=self._open_conversations,
                max_batch=max_batch,
                flushers=1,
                name="sqlite.opens",
            )
        )

    @property
    def backend(self) -> str:
        return "sqlite"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(conn)`` in the worker thread; sqlite's errors as the store's."""
        if self._closed:
            raise StoreUnavailable("the sqlite store is closed")
        return await self.hops.call(work)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(lambda conn: _tx(conn, work))

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        return time.perf_counter() - started

    # -- inbox -----------------------------------------------------------------------
    async def accept(self, message: NewInbound) -> Accepted:
        return await self.committer.submit(message)

    async def accept_one(self, message: NewInbound) -> Accepted:
        """``accept`` without group commit (one transaction per call; for comparison)."""
        return (await self._accept_batch([message]))[0]

    async def _accept_batch(self, batch: Sequence[NewInbound]) -> list[Accepted]:
        now = ts(utcnow())
        return await self._write(lambda conn: _accept_rows(conn, batch, now))

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> Sequence[InboxRow]:
        return await self._run(lambda conn: _pending_inbox(conn, user_key, limit))

    async def mark_processed(
        self, inbox_id: int, *, service_type: ServiceType | None = None
    ) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE inbox SET processed_at = coalesce(processed_at, ?), "
                "service_type = coalesce(?, service_type) WHERE inbox_id = ?",
                (now, service_type.value if service_type else None, inbox_id),
            )
        )

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        """One transaction; concurrent turns share one (each in its own savepoint)."""
        result = await self.turn_committer.submit(turn)
        if isinstance(result, Exception):
            raise result
        return result

    async def _complete_turns(
        self, turns: Sequence[TurnRecord]
    ) -> list[tuple[int, ...] | Exception]:
        now = ts(utcnow())
        return await self._run(
            lambda conn: _whole_or_each(
                conn,
                lambda c: _turn_rows(c, turns, now),
                lambda c: _in_savepoints(c, turns, lambda c, turn: _write_turn(c, turn, now)),
                batch="turns",
            )
        )

    # -- outbox ----------------------------------------------------------------------
    async def enqueue_reply(self, reply: NewOutbound) -> int:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                _INSERT_OUTBOX,
                (
                    reply.correlation_id,
                    reply.channel.value,
                    reply.user_key,
                    reply.chat_id,
                    reply.text,
                    reply.inbox_id,
                    now,
                    now,
                ),
            ).fetchone()
            return int(row[0])

        return await self._write(work)

    async def pending_outbox(
        self, channel: Channel, *, now: datetime | None = None, limit: int = 100
    ) -> Sequence[OutboxRow]:
        due = ts(now or utcnow())
        return await self._run(
            lambda conn: [
                _outbox_row(r)
                for r in conn.execute(_PENDING_OUTBOX, (channel.value, due, due, limit))
            ]
        )

    async def mark_sent(self, outbox_id: int) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET sent_at = coalesce(sent_at, ?), attempts = attempts + 1 "
                "WHERE outbox_id = ?",
                (now, outbox_id),
            )
        )

    async def mark_send_failed(
        self, outbox_id: int, *, error: str, retry_at: datetime | None
    ) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = coalesce(?, next_attempt_at), given_up = ? WHERE outbox_id = ?",
                (
                    error[:2000],
                    ts(retry_at) if retry_at else None,
                    int(retry_at is None),
                    outbox_id,
                ),
            )
        )

    # -- users, identities, conversations --------------------------------------------
    async def resolve_user(
        self, channel: Channel, user_key: str, *, display_name: str | None = None
    ) -> int:
        now = ts(utcnow())
        return await self._write(
            lambda conn: _resolve_user(conn, channel, user_key, display_name, now)
        )

    async def link_identity(self, user_id: int, channel: Channel, user_key: str) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO identities (user_id, channel, user_key, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (channel, user_key) DO UPDATE SET user_id = excluded.user_id",
                (user_id, channel.value, user_key, now),
            )
        )

    async def user_for_key(self, user_key: str) -> UserRow | None:
        def work(conn: sqlite3.Connection) -> UserRow | None:
            r = conn.execute(
                "SELECT u.* FROM users AS u JOIN identities AS i USING (user_id) "
                "WHERE i.user_key = ? ORDER BY i.identity_id LIMIT 1",
                (user_key,),
            ).fetchone()
            if r is None:
                return None
            return UserRow(
                user_id=r["user_id"],
                display_name=r["display_name"],
                unreachable=bool(r["unreachable"]),
                created_at=_dt(r["created_at"]),
            )

        return await self._run(work)

    async def mark_unreachable(self, user_key: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE users SET unreachable = 1 WHERE user_id IN "
                "(SELECT user_id FROM identities WHERE user_key = ?)",
                (user_key,),
            )
            conn.execute(
                "UPDATE outbox SET given_up = 1, last_error = 'user unreachable' "
                "WHERE user_key = ? AND sent_at IS NULL AND given_up = 0",
                (user_key,),
            )

        await self._write(work)

    async def conversation_for(self, user_id: int) -> ConversationRow:
        now = ts(utcnow())
        return await self._write(lambda conn: _conversation_for(conn, user_id, now))

    async def open_conversation(
        self,
        channel: Channel,
        user_key: str,
        *,
        display_name: str | None = None,
        pending_limit: int,
        recent_limit: int,
    ) -> ConversationStart:
        """One transaction; concurrent opens share one (each in its own savepoint)."""
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
        now = ts(utcnow())
        return await self._run(
            lambda conn: _whole_or_each(
                conn,
                lambda c: _open_rows(c, openings, now),
                lambda c: _in_savepoints(c, openings, lambda c, o: _open_conversation(c, o, now)),
                batch="opens",
            )
        )

    async def set_service_type(self, conversation_id: int, service_type: ServiceType) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE conversations SET service_type = ?, updated_at = ? WHERE conversation_id = ?",
                (service_type.value, now, conversation_id),
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
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO messages (conversation_id, direction, text, service_type, "
                "correlation_id, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING message_id",
                (conversation_id, direction.value, text, service_type.value, correlation_id, now),
            ).fetchone()
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE conversation_id = ?",
                (now, conversation_id),
            )
            return int(row[0])

        return await self._write(work)

    async def recent_turns(self, conversation_id: int, *, limit: int) -> Sequence[Turn]:
        return await self._run(lambda conn: _recent_turns(conn, conversation_id, limit))

    async def record_interaction(self, interaction: Interaction) -> None:
        values = _interaction_values(interaction)
        await self._write(lambda conn: conn.execute(_INSERT_INTERACTION, values))

    # -- channel cursors -------------------------------------------------------------
    async def get_cursor(self, name: str) -> str | None:
        def work(conn: sqlite3.Connection) -> str | None:
            r = conn.execute("SELECT value FROM channel_cursors WHERE name = ?", (name,)).fetchone()
            return None if r is None else str(r[0])

        return await self._run(work)

    async def set_cursor(self, name: str, value: str) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO channel_cursors (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (name, value, now),
            )
        )

    # -- handoffs --------------------------------------------------------------------
    async def open_handoff(
        self, *, conversation_id: int, user_key: str, reason: str, correlation_id: str
    ) -> HandoffRow:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> HandoffRow:
            conn.execute(
                "INSERT INTO handoffs (conversation_id, user_key, state, reason, correlation_id, "
                "opened_at) VALUES (?, ?, 'open', ?, ?, ?) "
                "ON CONFLICT (conversation_id) WHERE state <> 'closed' DO NOTHING",
                (conversation_id, user_key, reason, correlation_id, now),
            )
            conn.execute(
                "UPDATE conversations SET handoff_open = 1, updated_at = ? WHERE conversation_id = ?",
                (now, conversation_id),
            )
            r = conn.execute(
                "SELECT * FROM handoffs WHERE conversation_id = ? AND state <> 'closed'",
                (conversation_id,),
            ).fetchone()
            return _handoff_row(r)

        return await self._write(work)

    async def active_handoff(self, conversation_id: int) -> HandoffRow | None:
        return await self._run(lambda conn: _active_handoff(conn, conversation_id))

    async def assign_handoff(self, handoff_id: int, *, staff: str) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE handoffs SET state = 'assigned', assigned_to = ?, assigned_at = ? "
                "WHERE handoff_id = ? AND state <> 'closed'",
                (staff, now, handoff_id),
            )
        )

    async def close_handoff(self, handoff_id: int, *, closed_by: str) -> None:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> None:
            r = conn.execute(
                "UPDATE handoffs SET state = 'closed', closed_at = ?, closed_by = ? "
                "WHERE handoff_id = ? AND state <> 'closed' RETURNING conversation_id",
                (now, closed_by, handoff_id),
            ).fetchone()
            if r is not None:
                conn.execute(
                    "UPDATE conversations SET handoff_open = 0, updated_at = ? WHERE conversation_id = ?",
                    (now, r[0]),
                )

        await self._write(work)

    async def handoffs_opened_before(self, cutoff: datetime) -> Sequence[HandoffRow]:
        return await self._run(
            lambda conn: [
                _handoff_row(r)
                for r in conn.execute(
                    "SELECT * FROM handoffs WHERE state <> 'closed' AND opened_at < ? ORDER BY handoff_id",
                    (ts(cutoff),),
                )
            ]
        )

    # -- data protection -------------------------------------------------------------
    async def erase_texts_before(self, cutoff: datetime) -> int:
        before = ts(cutoff)

        def work(conn: sqlite3.Connection) -> int:
            touched = conn.execute(
                "UPDATE messages SET text = '' WHERE created_at < ? AND text <> ''", (before,)
            ).rowcount
            touched += conn.execute(
                "UPDATE inbox SET text = '', display_name = NULL "
                "WHERE received_at < ? AND processed_at IS NOT NULL AND text <> ''",
                (before,),
            ).rowcount
            touched += conn.execute(
                "UPDATE outbox SET text = '' WHERE created_at < ? AND text <> '' "
                "AND (sent_at IS NOT NULL OR given_up = 1)",
                (before,),
            ).rowcount
            return touched

        return await self._write(work)

    async def forget_user(self, user_id: int) -> int:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> int:
            keys = [
                r[0]
                for r in conn.execute(
                    "SELECT user_key FROM identities WHERE user_id = ?", (user_id,)
                )
            ]
            marks = ",".join("?" * len(keys))
            touched = conn.execute(
                "DELETE FROM messages WHERE conversation_id IN "
                "(SELECT conversation_id FROM conversations WHERE user_id = ?)",
                (user_id,),
            ).rowcount
            if keys:
                touched += conn.execute(
                    f"DELETE FROM outbox WHERE user_key IN ({marks})", keys
                ).rowcount
                touched += conn.execute(
                    f"DELETE FROM inbox WHERE user_key IN ({marks})", keys
                ).rowcount
                touched += conn.execute(
                    f"UPDATE handoffs SET user_key = 'forgotten', reason = '' "
                    f"WHERE user_key IN ({marks})",
                    keys,
                ).rowcount
            touched += conn.execute("DELETE FROM identities WHERE user_id = ?", (user_id,)).rowcount
            touched += conn.execute(
                "UPDATE users SET display_name = NULL, forgotten_at = ? WHERE user_id = ?",
                (now, user_id),
            ).rowcount
            return touched

        return await self._write(work)

    async def aclose(self) -> None:
        """Idempotent; ``open_sqlite`` calls it on the way out."""
        if self._closed:
            return
        self._closed = True
        if self.hops.running:
            await self.hops.call(lambda conn: conn.close())
        else:
            await trio.to_thread.run_sync(self._conn.close)


def _prepare(path: Path, busy_timeout_s: float) -> tuple[sqlite3.Connection, list[int]]:
    conn = _connect(path, busy_timeout_s)
    try:
        applied = apply_sqlite(conn)
    except BaseException:
        conn.close()
        raise
    return conn, applied


async def migrate_sqlite(path: Path, *, busy_timeout_s: float = 5.0) -> list[int]:
    def work() -> list[int]:
        conn, applied = _prepare(path, busy_timeout_s)
        conn.close()
        return applied

    try:
        return await trio.to_thread.run_sync(work)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite {path}: {exc}") from exc


@asynccontextmanager
async def open_sqlite(
    path: Path, *, max_batch: int = 256, busy_timeout_s: float = 5.0
) -> AsyncIterator[SqliteStore]:
    """Open (creating and migrating if needed) the store file; close it on the way out."""
    try:
        conn, applied = await trio.to_thread.run_sync(_prepare, path, busy_timeout_s)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnavailable(f"sqlite {path}: {exc}") from exc
    if applied:
        log.info("store.migrated", backend="sqlite", versions=applied)
    store = SqliteStore(conn=conn, path=path, max_batch=max_batch)
    log.info("store.opened", backend="sqlite", path=str(path))
    try:
        async with (
            _serving(store.hops),
            flushing(store.committer),
            flushing(store.turn_committer),
            flushing(store.open_committer),
        ):
            yield store
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await store.aclose()
        log.info("store.closed", backend="sqlite")
