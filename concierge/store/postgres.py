"""The production durable store: PostgreSQL through asyncpg, bridged into trio by trio-asyncio.

asyncpg is asyncio-only; through ``trio_asyncio.aio_as_trio`` its cancellation is
the cleanest measured (a cancelled trio scope cancels the server query and the
pool stays intact). The bridge and the per-statement client work cost throughput,
so concurrent accepts, conversation opens and completed turns are group-committed:
each batch shares one crossing and runs a fixed handful of set-based statements
over ``unnest`` arrays, whatever its size (accepts two at most, opens six, turns one;
the opens' and turns' statements are in ``postgres_batches``, one item's statements
in ``postgres_per_item``). This module crosses the bridge for the pool (each store
method at most once); ``postgres_replicas`` does for the dedicated sessions alone.
Connection failures become ``StoreUnavailable`` within a bounded time, and the
asyncpg pool replaces broken connections by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date, datetime
from typing import Any, TypeVar

import asyncpg
import structlog
import trio
import trio_asyncio

from concierge.protocol import (
    Accepted,
    AcceptStatus,
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
)
from concierge.settings import StoreSettings
from concierge.store import (
    postgres_desk as desk,
    postgres_persons as persons,
    postgres_replicas as replicas,
)
from concierge.store.erasure_keys import (
    ERASED,
    ERASURE_KEY_NAME,
    erasure_digest,
    message_digests,
    new_erasure_key,
)
from concierge.store.errors import SchemaOutdated, StoreUnavailable
from concierge.store.group_commit import GroupCommitter, flushing
from concierge.store.migrations import SCHEMA_MIGRATIONS_POSTGRES, latest_version, load_migrations
from concierge.store.postgres_batches import flush_openings, flush_turns, pending_by_key
from concierge.store.postgres_driver import (
    DRIVER_ERRORS as _DRIVER_ERRORS,
    Conn,
    as_store_error as _as_store_error,
    clean as _clean,
    connection_lost as _connection_lost,
)
from concierge.store.postgres_per_item import (
    active_handoff as _active_handoff,
    conversation_for as _conversation_for,
    insert_outbox as _insert_outbox,
    pending_inbox as _pending_inbox,
    recent_turns as _recent_turns,
    resolve_user as _resolve_user,
)
from concierge.store.rows import (
    MAKE_URGENT as _MAKE_URGENT,
    Opening,
    handoff_row as _handoff_row,
    outbox_row as _outbox_row,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
Work = Callable[[Conn], Awaitable[T]]

_MIGRATION_LOCK = 0x636F6E63  # "conc": serialises concurrent `concierge migrate` runs
_ERASE_BATCH = 5000


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
                   received_at, display_name, language_hint, reply_to)
SELECT c, ch, uk, cid, eid, tx, k, ra, dn, lh, rt
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[])
     WITH ORDINALITY AS t(c, ch, uk, cid, eid, tx, k, ra, dn, lh, dg, rt, ord)
WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE digest = t.dg)
ORDER BY ord
ON CONFLICT (channel, external_id) DO NOTHING
RETURNING inbox_id, channel, external_id
"""

_EXISTING_INBOX = """
SELECT inbox_id, channel, external_id FROM inbox
WHERE (channel, external_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


OUTBOX_CLAIM_S = 30.0
"""How long a replica's claim on outbox rows lasts without being read again: how soon
another replica sends what a dead one had claimed."""


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
        dsn: str = "",
        replica_id: str = "local",
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self.replica_id = replica_id
        """This process's name in conversation leases and outbox claims."""
        self._erasure_key: bytes | None = None
        self._loop = loop
        self._op_timeout_s = op_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._release_timeout_s = min(acquire_timeout_s, 1.0)
        self.committer: GroupCommitter[InboundMessage, Accepted] = GroupCommitter(
            flush=self._accept_batch,
            max_batch=max_batch,
            flushers=flushers,
            wait_timeout_s=op_timeout_s * 2,
            name="postgres.inbox",
        )
        self.turn_committer: GroupCommitter[TurnRecord, tuple[int, ...]] = GroupCommitter(
            flush=self._complete_turns,
            max_batch=max_batch,
            flushers=flushers,
            wait_timeout_s=op_timeout_s * 2,
            name="postgres.turns",
        )
        self.pending_reader: GroupCommitter[tuple[str, int], list[Inbound]] = GroupCommitter(
            flush=self._pending_batch,
            max_batch=max_batch,
            flushers=flushers,
            wait_timeout_s=op_timeout_s * 2,
            name="postgres.pending",
        )
        self.open_committer: GroupCommitter[Opening, ConversationStart] = GroupCommitter(
            flush=self._open_conversations,
            max_batch=max_batch,
            flushers=flushers,
            wait_timeout_s=op_timeout_s * 2,
            name="postgres.opens",
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

    # -- replicas --------------------------------------------------------------------
    async def acquire_lease(self, key: str, *, user_key: str, ttl_s: float) -> int | None:
        """Hold ``key``'s lease for ``ttl_s``; its new fencing epoch, or ``None`` while another
        replica holds it unexpired. This replica's own lease is taken again at once."""
        epoch = await self._call(
            lambda conn: conn.fetchval(
                replicas.ACQUIRE_LEASE, key, self.replica_id, ttl_s, user_key
            )
        )
        return None if epoch is None else int(epoch)

    async def renew_lease(self, key: str, epoch: int, *, ttl_s: float) -> bool:
        """Extend a lease still held at ``epoch``; ``False`` once it was lost."""
        renewed = await self._call(
            lambda conn: conn.fetchval(replicas.RENEW_LEASE, key, self.replica_id, epoch, ttl_s)
        )
        return renewed is not None

    async def release_lease(self, key: str, epoch: int) -> None:
        """Let ``key`` go now: another replica may take it at once (the epoch stays)."""
        await self._call(
            lambda conn: conn.execute(replicas.RELEASE_LEASE, key, self.replica_id, epoch)
        )

    async def other_leases(self, key: str, user_keys: Sequence[str]) -> int:
        """Live leases, under keys other than ``key``, of conversations of ``user_keys``."""
        found = await self._call(
            lambda conn: conn.fetchval(replicas.OTHER_LEASES, key, list(user_keys))
        )
        return int(found)

    async def release_leases(self) -> int:
        """Let every lease of this replica go now; return how many were held."""
        row = await self._call(lambda conn: conn.fetchrow(replicas.RELEASE_ALL, self.replica_id))
        return int(row[0])

    async def release_outbox_claims(self) -> int:
        """Give back this replica's claims on unsent outbox rows; return how many."""
        status = await self._call(
            lambda conn: conn.execute(replicas.RELEASE_OUTBOX_CLAIMS, self.replica_id)
        )
        return int(str(status).rsplit(" ", 1)[-1])

    def open_session(self, name: str) -> AbstractAsyncContextManager[replicas.PgSession]:
        """A connection of its own, outside the pool (advisory locks, ``LISTEN``)."""
        return replicas.open_session(
            self._dsn,
            self._loop,
            name=f"concierge:{name}:{self.replica_id}",
            timeout_s=self._acquire_timeout_s,
        )

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
    async def accept(self, message: InboundMessage) -> Accepted:
        return await self.committer.submit(message)

    async def _accept_batch(self, batch: Sequence[InboundMessage]) -> list[Accepted]:
        """One statement in the common case: the insert itself skips tombstoned messages,
        so a key neither inserted nor found was erased (one crossing of the bridge, as
        before tombstones)."""
        key_of = await self.erasure_key()
        first: dict[tuple[str, str], int] = {}  # key -> position of its first occurrence
        unique: list[InboundMessage] = []
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
            message_digests(key_of, unique),
            [m.reply_to for m in unique],
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
            else:  # the insert skipped it: a tombstone matched
                results.append(ERASED)
        return results

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> Sequence[Inbound]:
        if user_key is None:
            return await self._call(lambda conn: _pending_inbox(conn, None, limit))
        # Actors starting without a handed-over message (restarts) each read their backlog:
        # many at once share one statement and one crossing of the bridge.
        return await self.pending_reader.submit((user_key, limit))

    async def _pending_batch(self, asks: Sequence[tuple[str, int]]) -> list[list[Inbound]]:
        limits: dict[str, int] = {}
        for user_key, limit in asks:
            limits[user_key] = max(limits.get(user_key, 0), limit)
        found = await self._call(lambda conn: pending_by_key(conn, limits))
        return [found.get(user_key, [])[:limit] for user_key, limit in asks]

    async def mark_processed(self, inbox_id: int) -> None:
        await self._call(
            lambda conn: conn.execute(
                "UPDATE inbox SET processed_at = coalesce(processed_at, now()) WHERE inbox_id = $1",
                inbox_id,
            )
        )

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        """One transaction; concurrent turns share it, one crossing and one statement.

        Safe to retry on a lost connection: a committed row is not claimed again."""
        return await self.turn_committer.submit(turn)

    async def _complete_turns(
        self, turns: Sequence[TurnRecord]
    ) -> list[tuple[int, ...] | Exception]:
        """One connection and one crossing for the batch; ``flush_turns`` says what runs."""
        return await self._call(lambda conn: flush_turns(conn, turns))

    # -- outbox ----------------------------------------------------------------------
    async def enqueue_reply(self, reply: OutboundReply) -> int:
        return await self._call(lambda conn: _insert_outbox(conn, reply), retry=False)

    async def pending_outbox(
        self, channel: Channel, *, now: datetime | None = None, limit: int = 100
    ) -> Sequence[OutboxRow]:
        """Claims the rows for this replica's sender (``OUTBOX_CLAIM_S``), so that with several
        replicas each row is sent by one; rows it claimed before are its own to read again."""

        async def work(conn: Conn) -> list[OutboxRow]:
            rows = await conn.fetch(
                replicas.CLAIM_OUTBOX, channel.value, now, limit, self.replica_id, OUTBOX_CLAIM_S
            )
            return sorted((_outbox_row(r) for r in rows), key=lambda row: row.outbox_id)

        return await self._call(work)

    async def mark_sent(self, outbox_id: int, *, message_ids: Sequence[str] = ()) -> None:
        await self._tx(lambda conn: desk.mark_sent(conn, outbox_id, message_ids))

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

    # -- persons -----------------------------------------------------------------------
    async def issue_link_code(
        self, *, channel: Channel, user_key: str, chat_id: str, digest: str, expires_at: datetime
    ) -> None:
        await self._tx(
            lambda conn: persons.issue_code(
                conn,
                channel=channel.value,
                user_key=user_key,
                chat_id=chat_id,
                digest=digest,
                expires_at=expires_at,
            )
        )

    async def live_link_codes(self, now: datetime) -> Sequence[LinkCode]:
        return await self._call(lambda conn: persons.live_codes(conn, now))

    async def claim_link_code(self, code_id: int, *, now: datetime) -> LinkCode | None:
        return await self._tx(lambda conn: persons.claim(conn, code_id, now=now))

    async def merge_persons(self, one: int, other: int) -> Linked:
        return await self._tx(lambda conn: persons.merge(conn, one, other))

    async def unlink_identity(self, user_key: str) -> Unlinked | None:
        return await self._tx(lambda conn: persons.unlink(conn, user_key))

    async def link_failures_since(self, user_key: str, since: datetime) -> int:
        return await self._call(lambda conn: persons.failures_since(conn, user_key, since))

    async def record_link_failure(self, user_key: str, at: datetime) -> None:
        await self._tx(lambda conn: persons.record_failure(conn, user_key, at))

    async def person_identities(self, user_id: int) -> Sequence[PersonIdentity]:
        return await self._call(lambda conn: persons.identities_of(conn, user_id))

    async def linked_identities(self) -> Sequence[PersonIdentity]:
        return await self._call(persons.linked_identities)

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
        """One connection and one crossing for the batch; ``flush_openings`` says what runs."""
        return await self._call(lambda conn: flush_openings(conn, openings))

    async def recent_turns(self, conversation_id: int, *, limit: int) -> Sequence[Turn]:
        return await self._call(lambda conn: _recent_turns(conn, conversation_id, limit))

    # -- channel cursors -------------------------------------------------------------
    async def usage_on(self, day: date) -> DailyUsage:
        async def work(conn: Conn) -> DailyUsage:
            users = await conn.fetch(
                "SELECT user_id, tokens_in + tokens_out AS tokens FROM user_usage WHERE day = $1",
                day,
            )
            providers = await conn.fetch(
                "SELECT provider, tokens_in + tokens_out AS tokens FROM provider_usage "
                "WHERE day = $1",
                day,
            )
            return DailyUsage(
                day=day,
                users={int(r["user_id"]): int(r["tokens"]) for r in users},
                providers={str(r["provider"]): int(r["tokens"]) for r in providers},
            )

        return await self._call(work)

    async def get_cursor(self, name: str) -> str | None:
        value = await self._call(
            lambda conn: conn.fetchval("SELECT value FROM channel_cursors WHERE name = $1", name)
        )
        return None if value is None else str(value)

    async def set_cursor(self, name: str, value: str) -> None:
        await self._call(lambda conn: conn.execute(replicas.SET_CURSOR, name, value))

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
        async def work(conn: Conn) -> Any:
            await conn.execute(
                "INSERT INTO handoffs (conversation_id, user_key, state, reason, correlation_id, "
                "urgent) VALUES ($1, $2, 'open', $3, $4, $5) "
                f"ON CONFLICT (conversation_id) WHERE state <> 'closed' {_MAKE_URGENT}",
                conversation_id,
                user_key,
                _clean(reason),
                correlation_id,
                urgent,
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

    async def close_handoff(self, handoff_id: int, *, closed_by: str) -> bool:
        closed = await self._call(
            lambda conn: conn.fetchval(
                "WITH h AS (UPDATE handoffs SET state = 'closed', closed_at = now(), closed_by = $2 "
                "WHERE handoff_id = $1 AND state <> 'closed' RETURNING conversation_id), "
                "c AS (UPDATE conversations SET handoff_open = false, updated_at = now() "
                "WHERE conversation_id IN (SELECT conversation_id FROM h)) "
                "SELECT count(*) FROM h",
                handoff_id,
                _clean(closed_by),
            )
        )
        return bool(closed)

    async def handoffs_opened_before(self, cutoff: datetime) -> Sequence[HandoffRow]:
        rows = await self._call(
            lambda conn: conn.fetch(
                "SELECT * FROM handoffs WHERE state <> 'closed' AND opened_at < $1 ORDER BY handoff_id",
                cutoff,
            )
        )
        return [_handoff_row(r) for r in rows]

    # -- the staff desk (postgres_desk) ------------------------------------------------
    async def list_handoffs(
        self, *, active: bool, limit: int, before: int | None = None
    ) -> Sequence[HandoffView]:
        return await self._call(
            lambda conn: desk.list_handoffs(conn, active=active, limit=limit, before=before)
        )

    async def handoff_view(self, handoff_id: int) -> HandoffView | None:
        return await self._call(lambda conn: desk.handoff_view(conn, handoff_id))

    async def claim_handoff(self, handoff_id: int, *, by: str, take_over: bool) -> None:
        await self._call(lambda conn: desk.claim_handoff(conn, handoff_id, by, take_over))

    async def record_staff_reply(self, reply: StaffReply) -> int | None:
        return await self._tx(lambda conn: desk.record_staff_reply(conn, reply))

    async def history(
        self, conversation_id: int, *, limit: int, before: int | None = None
    ) -> Sequence[HistoryEntry]:
        return await self._call(
            lambda conn: desk.history(conn, conversation_id, limit=limit, before=before)
        )

    async def user_view(self, user_id: int) -> UserView | None:
        return await self._call(lambda conn: desk.user_view(conn, user_id))

    async def handoff_for_staff_message(
        self, channel: Channel, chat_id: str, message_id: str
    ) -> int | None:
        return await self._call(
            lambda conn: desk.handoff_for_staff_message(conn, channel, chat_id, message_id)
        )

    async def record_audit(self, entry: AuditEntry) -> int:
        return await self._call(lambda conn: desk.record_audit(conn, entry), retry=False)

    async def audit_entries(self, *, limit: int, before: int | None = None) -> Sequence[AuditRow]:
        return await self._call(lambda conn: desk.audit_entries(conn, limit=limit, before=before))

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

    async def erasure_key(self) -> bytes:
        if self._erasure_key is None:

            async def work(conn: Conn) -> str:
                await conn.execute(
                    "INSERT INTO store_keys (name, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    ERASURE_KEY_NAME,
                    new_erasure_key(),
                )
                return str(
                    await conn.fetchval(
                        "SELECT secret FROM store_keys WHERE name = $1", ERASURE_KEY_NAME
                    )
                )

            self._erasure_key = bytes.fromhex(await self._call(work))
        return self._erasure_key

    async def erasures_after(
        self, erasure_id: int, *, limit: int = 1000
    ) -> Sequence[ErasureNotice]:
        async def work(conn: Conn) -> Sequence[ErasureNotice]:
            rows = await conn.fetch(
                "SELECT erasure_id, user_digest FROM erasures WHERE erasure_id > $1 "
                "ORDER BY erasure_id LIMIT $2",
                erasure_id,
                limit,
            )
            return [ErasureNotice(erasure_id=r[0], user_digest=r[1]) for r in rows]

        return await self._call(work)

    async def forget_user(self, user_id: int) -> Erased:
        key = await self.erasure_key()

        async def work(conn: Conn) -> Erased:
            keys = [
                r[0]
                for r in await conn.fetch(
                    "SELECT user_key FROM identities WHERE user_id = $1", user_id
                )
            ]
            messages = await conn.fetch(
                "SELECT channel, external_id FROM inbox WHERE user_key = ANY($1::text[])", keys
            )
            await conn.execute(
                "INSERT INTO tombstones (digest) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                [erasure_digest(key, r[0], r[1]) for r in messages],
            )
            await conn.execute(
                "INSERT INTO erasures (user_digest) SELECT unnest($1::text[])",
                # The person's own key too: a linked person's actor and cache use it.
                [erasure_digest(key, k) for k in [*keys, person_key(user_id)]] if keys else [],
            )
            for table in ("link_codes", "link_failures"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE user_key = ANY($1::text[])",
                    keys,
                )
            statuses = [
                await conn.execute(
                    "DELETE FROM messages WHERE conversation_id IN "
                    "(SELECT conversation_id FROM conversations WHERE user_id = $1)",
                    user_id,
                ),
                await conn.execute(
                    "DELETE FROM outbox WHERE user_key = ANY($1::text[]) OR correlation_id IN "
                    "(SELECT correlation_id FROM inbox WHERE user_key = ANY($1::text[]))",
                    keys,
                ),
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
            rows = sum(int(str(s).rsplit(" ", 1)[-1]) for s in statuses)
            await persons.notify_people(conn, user_id)
            return Erased(rows=rows, user_keys=tuple(keys))

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


async def _create_pool(settings: StoreSettings, loop: asyncio.AbstractEventLoop) -> Any:
    """asyncpg's pool, with the server-side timeouts; the store's errors if it cannot connect."""
    assert settings.database_url is not None
    timeout_s = settings.command_timeout_s
    server_settings = {
        "application_name": "concierge",
        "statement_timeout": str(int(settings.statement_timeout_s * 1000)),
        "idle_in_transaction_session_timeout": str(
            int(max(settings.statement_timeout_s * 2, 10) * 1000)
        ),
    }

    async def create() -> Any:
        return await asyncpg.create_pool(
            settings.database_url,
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
            return await trio_asyncio.aio_as_trio(create, loop=loop)()
    except trio.TooSlowError:
        raise StoreUnavailable(f"postgres: no connection within {timeout_s * 2:g} s") from None
    except _DRIVER_ERRORS as exc:
        raise _as_store_error(exc) from exc


@asynccontextmanager
async def open_postgres(
    settings: StoreSettings, *, max_batch: int = 256, flushers: int = 1
) -> AsyncIterator[PostgresStore]:
    """Open the pool, check the schema version, run the group-commit flushers; close on exit.

    One flusher per kind of write: every batch costs the event loop one crossing of
    the bridge whatever its size, so while one commits the next gathers more. A
    second flusher (one batch committing while the next fills) gave the same accept
    throughput (19.4k/s against 19.2k/s, 50 callers) but twice the batches, and
    10,000 new users were answered 0.3-0.5 s later. Other queries use the rest of
    the pool.

    Raises ``StoreUnavailable`` when the server cannot be reached and
    ``SchemaOutdated`` when ``concierge migrate`` has not been run.
    """
    if settings.database_url is None:
        raise ValueError("DATABASE_URL is unset: open_postgres needs a PostgreSQL DSN")
    timeout_s = settings.command_timeout_s
    needed = latest_version("postgres")
    async with asyncio_loop() as loop:
        pool = await _create_pool(settings, loop)
        store = PostgresStore(
            # asyncpg's own timeouts (connect, command, release) fire first; this
            # backstop only ends a call they did not (several statements on a hung server).
            pool=pool,
            loop=loop,
            op_timeout_s=timeout_s * 3,
            acquire_timeout_s=timeout_s,
            max_batch=max_batch,
            flushers=flushers,
            dsn=settings.database_url,
            replica_id=settings.replica_id,
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
                flushing(store.pending_reader),
            ):
                yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
            log.info("store.closed", backend="postgres")
