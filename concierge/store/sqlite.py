"""The embedded durable store: one SQLite file, stdlib ``sqlite3`` in a worker thread.

One connection, used by one worker thread at a time, in WAL mode with
``synchronous=FULL``: an inbox row is the promise behind a 2xx to the
platform, which will not deliver again, so a commit must survive power loss, not
only a crash of the process (``NORMAL`` in WAL mode may lose the last commits on
power loss). Group commit pays the extra fsync once per batch. Calls reach the
thread in hops (``sqlite_worker``); a batch of accepts, opens or turns runs as a few
set-based statements whatever its size (``sqlite_batches``), and one item's
statements, for the single calls and a batch one item fails, are in
``sqlite_per_item``. The file migrates itself at open.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

import structlog
import trio

from concierge.protocol import (
    Accepted,
    AuditEntry,
    AuditRow,
    Channel,
    ConversationRow,
    ConversationStart,
    DailyUsage,
    Erased,
    ErasureNotice,
    HandoffRow,
    HandoffView,
    HistoryEntry,
    Inbound,
    InboundMessage,
    LinkCode,
    Linked,
    OutboundReply,
    OutboxRow,
    PersonIdentity,
    StaffReply,
    Turn,
    TurnRecord,
    Unlinked,
    UserRow,
    UserView,
    person_key,
    utcnow,
)
from concierge.store import sqlite_desk as desk, sqlite_persons as persons
from concierge.store.background import running
from concierge.store.erasure_keys import (
    ERASURE_KEY_NAME,
    erasure_digest,
    message_digests,
    new_erasure_key,
    with_erased,
)
from concierge.store.errors import StoreUnavailable
from concierge.store.group_commit import GroupCommitter, flushing
from concierge.store.migrations import apply_sqlite
from concierge.store.rows import MAKE_URGENT as _MAKE_URGENT, Opening
from concierge.store.sqlite_batches import (
    accept_rows as _accept_rows,
    flush_openings,
    flush_turns,
)
from concierge.store.sqlite_driver import (
    dt as _dt,
    handoff_row as _handoff_row,
    outbox_row as _outbox_row,
    ts as ts,
    tx as _tx,
)
from concierge.store.sqlite_per_item import (
    INSERT_OUTBOX as _INSERT_OUTBOX,
    active_handoff as _active_handoff,
    conversation_for as _conversation_for,
    outbox_values,
    pending_inbox as _pending_inbox,
    recent_turns as _recent_turns,
    resolve_user as _resolve_user,
)
from concierge.store.sqlite_worker import WorkerHops

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_NAME = "concierge.sqlite3"


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


class SqliteStore:
    """``Store`` on one SQLite file. Build it with ``open_sqlite``."""

    def __init__(self, *, conn: sqlite3.Connection, path: Path, max_batch: int) -> None:
        self._conn = conn
        self.path = path
        self.hops = WorkerHops(conn, max_calls=max_batch)
        self._closed = False
        self._erasure_key: bytes | None = None
        self.committer: GroupCommitter[InboundMessage, Accepted] = GroupCommitter(
            flush=self._accept_batch, max_batch=max_batch, flushers=1, name="sqlite.inbox"
        )
        self.turn_committer: GroupCommitter[TurnRecord, tuple[int, ...]] = GroupCommitter(
            flush=self._complete_turns, max_batch=max_batch, flushers=1, name="sqlite.turns"
        )
        self.open_committer: GroupCommitter[Opening, ConversationStart] = GroupCommitter(
            flush=self._open_conversations,
            max_batch=max_batch,
            flushers=1,
            name="sqlite.opens",
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
    async def accept(self, message: InboundMessage) -> Accepted:
        return await self.committer.submit(message)

    async def _accept_batch(self, batch: Sequence[InboundMessage]) -> list[Accepted]:
        now = ts(utcnow())
        digests = message_digests(await self.erasure_key(), batch)

        def work(conn: sqlite3.Connection) -> list[Accepted]:
            erased = {
                r[0]
                for r in conn.execute(
                    "SELECT digest FROM tombstones WHERE digest IN (SELECT value FROM json_each(?))",
                    (json.dumps(digests),),
                )
            }
            kept = [m for m, d in zip(batch, digests, strict=True) if d not in erased]
            return with_erased(digests, erased, _accept_rows(conn, kept, now) if kept else [])

        return await self._write(work)

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> Sequence[Inbound]:
        return await self._run(lambda conn: _pending_inbox(conn, user_key, limit))

    async def mark_processed(self, inbox_id: int) -> None:
        now = ts(utcnow())
        await self._write(
            lambda conn: conn.execute(
                "UPDATE inbox SET processed_at = coalesce(processed_at, ?) WHERE inbox_id = ?",
                (now, inbox_id),
            )
        )

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        """One transaction; concurrent turns share one (each in its own savepoint)."""
        return await self.turn_committer.submit(turn)

    async def _complete_turns(
        self, turns: Sequence[TurnRecord]
    ) -> list[tuple[int, ...] | Exception]:
        now = ts(utcnow())
        return await self._run(lambda conn: flush_turns(conn, turns, now))

    # -- outbox ----------------------------------------------------------------------
    async def enqueue_reply(self, reply: OutboundReply) -> int:
        now = ts(utcnow())

        return await self._write(
            lambda conn: int(conn.execute(_INSERT_OUTBOX, outbox_values(reply, now)).fetchone()[0])
        )

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

    async def mark_sent(self, outbox_id: int, *, message_ids: Sequence[str] = ()) -> None:
        now = ts(utcnow())
        await self._write(lambda conn: desk.mark_sent(conn, outbox_id, message_ids, now))

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

    # -- persons -----------------------------------------------------------------------
    async def issue_link_code(
        self, *, channel: Channel, user_key: str, chat_id: str, digest: str, expires_at: datetime
    ) -> None:
        now = utcnow()
        await self._write(
            lambda conn: persons.issue_code(
                conn,
                channel=channel.value,
                user_key=user_key,
                chat_id=chat_id,
                digest=digest,
                expires_at=expires_at,
                now=now,
            )
        )

    async def live_link_codes(self, now: datetime) -> Sequence[LinkCode]:
        return await self._run(lambda conn: persons.live_codes(conn, now))

    async def claim_link_code(self, code_id: int, *, now: datetime) -> LinkCode | None:
        return await self._write(lambda conn: persons.claim(conn, code_id, now=now))

    async def merge_persons(self, one: int, other: int) -> Linked:
        now = utcnow()
        return await self._write(lambda conn: persons.merge(conn, one, other, now=now))

    async def unlink_identity(self, user_key: str) -> Unlinked | None:
        now = utcnow()
        return await self._write(lambda conn: persons.unlink(conn, user_key, now=now))

    async def link_failures_since(self, user_key: str, since: datetime) -> int:
        return await self._run(lambda conn: persons.failures_since(conn, user_key, since))

    async def record_link_failure(self, user_key: str, at: datetime) -> None:
        await self._write(lambda conn: persons.record_failure(conn, user_key, at))

    async def person_identities(self, user_id: int) -> Sequence[PersonIdentity]:
        return await self._run(lambda conn: persons.identities_of(conn, user_id))

    async def linked_identities(self) -> Sequence[PersonIdentity]:
        return await self._run(persons.linked_identities)

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
        return await self.open_committer.submit(
            Opening(
                channel=channel,
                user_key=user_key,
                display_name=display_name,
                pending_limit=pending_limit,
                recent_limit=recent_limit,
            )
        )

    async def _open_conversations(
        self, openings: Sequence[Opening]
    ) -> list[ConversationStart | Exception]:
        now = ts(utcnow())
        return await self._run(lambda conn: flush_openings(conn, openings, now))

    async def recent_turns(self, conversation_id: int, *, limit: int) -> Sequence[Turn]:
        return await self._run(lambda conn: _recent_turns(conn, conversation_id, limit))

    # -- channel cursors -------------------------------------------------------------
    async def usage_on(self, day: date) -> DailyUsage:
        key = day.isoformat()

        def work(conn: sqlite3.Connection) -> DailyUsage:
            users = conn.execute(
                "SELECT user_id, tokens_in + tokens_out FROM user_usage WHERE day = ?", (key,)
            )
            providers = conn.execute(
                "SELECT provider, tokens_in + tokens_out FROM provider_usage WHERE day = ?", (key,)
            )
            return DailyUsage(
                day=day,
                users={int(r[0]): int(r[1]) for r in users},
                providers={str(r[0]): int(r[1]) for r in providers},
            )

        return await self._run(work)

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
        self,
        *,
        conversation_id: int,
        user_key: str,
        reason: str,
        correlation_id: str,
        urgent: bool = False,
    ) -> HandoffRow:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> HandoffRow:
            conn.execute(
                "INSERT INTO handoffs (conversation_id, user_key, state, reason, correlation_id, "
                "opened_at, urgent) VALUES (?, ?, 'open', ?, ?, ?, ?) "
                f"ON CONFLICT (conversation_id) WHERE state <> 'closed' {_MAKE_URGENT}",
                (conversation_id, user_key, reason, correlation_id, now, int(urgent)),
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

    async def close_handoff(self, handoff_id: int, *, closed_by: str) -> bool:
        now = ts(utcnow())

        def work(conn: sqlite3.Connection) -> bool:
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
            return r is not None

        return await self._write(work)

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

    # -- the staff desk (sqlite_desk) --------------------------------------------------
    async def list_handoffs(
        self, *, active: bool, limit: int, before: int | None = None
    ) -> Sequence[HandoffView]:
        return await self._run(
            lambda conn: desk.list_handoffs(conn, active=active, limit=limit, before=before)
        )

    async def handoff_view(self, handoff_id: int) -> HandoffView | None:
        return await self._run(lambda conn: desk.handoff_view(conn, handoff_id))

    async def claim_handoff(self, handoff_id: int, *, by: str, take_over: bool) -> None:
        now = ts(utcnow())
        await self._write(lambda conn: desk.claim_handoff(conn, handoff_id, by, take_over, now))

    async def record_staff_reply(self, reply: StaffReply) -> int | None:
        now = ts(utcnow())
        return await self._write(lambda conn: desk.record_staff_reply(conn, reply, now))

    async def history(
        self, conversation_id: int, *, limit: int, before: int | None = None
    ) -> Sequence[HistoryEntry]:
        return await self._run(
            lambda conn: desk.history(conn, conversation_id, limit=limit, before=before)
        )

    async def user_view(self, user_id: int) -> UserView | None:
        return await self._run(lambda conn: desk.user_view(conn, user_id))

    async def handoff_for_staff_message(
        self, channel: Channel, chat_id: str, message_id: str
    ) -> int | None:
        return await self._run(
            lambda conn: desk.handoff_for_staff_message(conn, channel, chat_id, message_id)
        )

    async def record_audit(self, entry: AuditEntry) -> int:
        return await self._write(lambda conn: desk.record_audit(conn, entry))

    async def audit_entries(self, *, limit: int, before: int | None = None) -> Sequence[AuditRow]:
        return await self._run(lambda conn: desk.audit_entries(conn, limit=limit, before=before))

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

    async def erasure_key(self) -> bytes:
        if self._erasure_key is None:

            def work(conn: sqlite3.Connection) -> str:
                conn.execute(
                    "INSERT INTO store_keys (name, secret) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (ERASURE_KEY_NAME, new_erasure_key()),
                )
                row = conn.execute(
                    "SELECT secret FROM store_keys WHERE name = ?", (ERASURE_KEY_NAME,)
                ).fetchone()
                return str(row[0])

            self._erasure_key = bytes.fromhex(await self._write(work))
        return self._erasure_key

    async def erasures_after(
        self, erasure_id: int, *, limit: int = 1000
    ) -> Sequence[ErasureNotice]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT erasure_id, user_digest FROM erasures WHERE erasure_id > ? "
                "ORDER BY erasure_id LIMIT ?",
                (erasure_id, limit),
            ).fetchall()
        )
        return [ErasureNotice(erasure_id=r[0], user_digest=r[1]) for r in rows]

    async def forget_user(self, user_id: int) -> Erased:
        now = ts(utcnow())
        key = await self.erasure_key()

        def work(conn: sqlite3.Connection) -> Erased:
            keys = [
                r[0]
                for r in conn.execute(
                    "SELECT user_key FROM identities WHERE user_id = ?", (user_id,)
                )
            ]
            marks = ",".join("?" * len(keys))
            if keys:
                messages = conn.execute(
                    f"SELECT channel, external_id FROM inbox WHERE user_key IN ({marks})", keys
                ).fetchall()
                conn.executemany(
                    "INSERT INTO tombstones (digest, erased_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [
                        (erasure_digest(key, channel, external), now)
                        for channel, external in messages
                    ],
                )
                conn.executemany(
                    "INSERT INTO erasures (user_digest, erased_at) VALUES (?, ?)",
                    # The person's own key too: a linked person's actor and cache use it.
                    [(erasure_digest(key, k), now) for k in [*keys, person_key(user_id)]],
                )
                for table in ("link_codes", "link_failures"):
                    conn.execute(f"DELETE FROM {table} WHERE user_key IN ({marks})", keys)
            touched = conn.execute(
                "DELETE FROM messages WHERE conversation_id IN "
                "(SELECT conversation_id FROM conversations WHERE user_id = ?)",
                (user_id,),
            ).rowcount
            if keys:
                touched += conn.execute(
                    f"DELETE FROM outbox WHERE user_key IN ({marks}) OR correlation_id IN "
                    f"(SELECT correlation_id FROM inbox WHERE user_key IN ({marks}))",
                    keys + keys,
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
            return Erased(rows=touched, user_keys=tuple(keys))

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
            running(store.hops.run),
            flushing(store.committer),
            flushing(store.turn_committer),
            flushing(store.open_committer),
        ):
            yield store
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await store.aclose()
        log.info("store.closed", backend="sqlite")
