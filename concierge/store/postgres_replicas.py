"""What lets several replicas share one PostgreSQL database: leases, claims, sessions of their own.

A conversation lease is a row with a holder, an expiry and a fencing epoch that only
grows; the database refuses a turn's commit under a stale epoch (the trigger of
migration 0007). A dedicated session is a connection outside the pool: session
advisory locks (singletons) and ``LISTEN`` live and die with it, so losing the
connection is losing the leadership, never holding it by accident.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import structlog
import trio
import trio_asyncio

from concierge.store.errors import StoreUnavailable
from concierge.store.postgres_driver import DRIVER_ERRORS, Conn, as_store_error

log = structlog.get_logger(__name__)

T = TypeVar("T")

ACQUIRE_LEASE = """
INSERT INTO conversation_leases AS l (lease_key, user_key, holder, epoch, expires_at)
VALUES ($1, $4, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (lease_key) DO UPDATE
SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at,
    user_key = excluded.user_key
WHERE l.expires_at <= now() OR l.holder = excluded.holder
RETURNING epoch
"""

RENEW_LEASE = """
UPDATE conversation_leases SET expires_at = now() + make_interval(secs => $4)
WHERE lease_key = $1 AND holder = $2 AND epoch = $3
RETURNING epoch
"""

# Expired at once (not deleted): the epoch must survive for the next holder to move past.
# A lease let go with rows still pending wakes every replica: one of them takes it at once
# (an actor that found the lease held and ended meanwhile left those rows to its holder).
RELEASE_LEASE = """
WITH released AS (
    UPDATE conversation_leases SET expires_at = '-infinity'
    WHERE lease_key = $1 AND holder = $2 AND epoch = $3
    RETURNING user_key
)
SELECT count(pg_notify('concierge_released', r.user_key)) FROM released AS r
WHERE EXISTS (SELECT 1 FROM inbox AS i WHERE i.user_key = r.user_key AND i.processed_at IS NULL)
"""

# Live leases of a person's identities under other keys: a link or an unlink changed the
# person's key while an actor of an old key ran somewhere (it retires and lets go).
OTHER_LEASES = """
SELECT count(*) FROM conversation_leases
WHERE user_key = ANY($2::text[]) AND lease_key <> $1 AND expires_at > now()
"""

# Every lease of this replica at once (a replica stopping).
RELEASE_ALL = """
WITH released AS (
    UPDATE conversation_leases SET expires_at = '-infinity'
    WHERE holder = $1 AND expires_at > now()
    RETURNING user_key
), woken AS (
    SELECT pg_notify('concierge_released', r.user_key) FROM released AS r
    WHERE EXISTS (SELECT 1 FROM inbox AS i WHERE i.user_key = r.user_key AND i.processed_at IS NULL)
)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM woken)
"""

# A user's unsent rows go to one sender at a time: only the head row (the user's oldest
# unsent one) is locked, ``SKIP LOCKED``, and whoever holds it claims the user's due
# rows behind it; a head claimed by another replica (and not expired) leaves the user
# to that replica. So two replicas never send one user's replies side by side, and
# replies keep their order. A row waiting for its retry still holds back later ones.
CLAIM_OUTBOX = """
WITH heads AS (
    SELECT DISTINCT ON (user_key) outbox_id
    FROM outbox
    WHERE channel = $1 AND sent_at IS NULL AND NOT given_up
    ORDER BY user_key, outbox_id
), locked AS (
    SELECT o.outbox_id, o.user_key FROM outbox AS o JOIN heads USING (outbox_id)
    WHERE o.next_attempt_at <= coalesce($2::timestamptz, now())
      AND (o.claimed_by IS NULL OR o.claimed_by = $4 OR o.claimed_until <= now())
    ORDER BY o.outbox_id
    LIMIT $3
    FOR UPDATE OF o SKIP LOCKED
), due AS (
    SELECT o.outbox_id FROM outbox AS o JOIN locked USING (user_key)
    WHERE o.channel = $1 AND o.sent_at IS NULL AND NOT o.given_up
      AND o.next_attempt_at <= coalesce($2::timestamptz, now())
      AND NOT EXISTS (
          SELECT 1 FROM outbox AS e
          WHERE e.user_key = o.user_key AND e.outbox_id < o.outbox_id
            AND e.sent_at IS NULL AND NOT e.given_up
            AND e.next_attempt_at > coalesce($2::timestamptz, now()))
    ORDER BY o.outbox_id
    LIMIT $3
)
UPDATE outbox SET claimed_by = $4, claimed_until = now() + make_interval(secs => $5)
FROM due WHERE outbox.outbox_id = due.outbox_id
RETURNING outbox.*
"""

# A replica stopping gives back the rows it claimed and did not send (its sender has
# stopped claiming and its deliveries in flight have ended): another replica sends them
# now, in order, rather than after the claim's expiry.
RELEASE_OUTBOX_CLAIMS = """
UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
WHERE claimed_by = $1 AND sent_at IS NULL
"""

# An offset (a number) never goes back: a poller that lost its leadership mid-batch
# cannot undo what the new leader confirmed.
SET_CURSOR = """
INSERT INTO channel_cursors (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()
WHERE NOT (channel_cursors.value ~ '^[0-9]{1,30}$' AND excluded.value ~ '^[0-9]{1,30}$'
           AND excluded.value::numeric < channel_cursors.value::numeric)
"""


def lock_id(name: str) -> int:
    """A stable 64-bit advisory lock id for a singleton's name."""
    digest = hashlib.blake2s(f"concierge:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PgSession:
    """One connection of its own: advisory locks and ``LISTEN`` are held by it alone."""

    def __init__(self, conn: Conn, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._conn = conn
        self._loop = loop
        self._timeout_s = timeout_s

    async def _run(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            with trio.fail_after(self._timeout_s):
                result: T = await trio_asyncio.aio_as_trio(work, loop=self._loop)()
                return result
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"postgres session: no answer within {self._timeout_s:g} s"
            ) from None
        except DRIVER_ERRORS as exc:
            raise as_store_error(exc) from exc

    async def ping(self) -> None:
        """One round trip: raises ``StoreError`` when the session is lost."""
        await self._run(lambda: self._conn.fetchval("SELECT 1"))

    @property
    def backend_pid(self) -> int:
        return int(self._conn.get_server_pid())

    async def try_lock(self, lock: int) -> bool:
        """Take the session advisory lock ``lock`` if free; it stays until the session ends."""
        return bool(
            await self._run(lambda: self._conn.fetchval("SELECT pg_try_advisory_lock($1)", lock))
        )

    async def holds(self, lock: int) -> bool:
        """Whether this session still holds ``lock`` (a round trip: a lost session raises)."""
        sql = (
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND objid = ($1::bigint & 4294967295)::oid "
            "AND classid = (($1::bigint >> 32) & 4294967295)::oid)"
        )
        return bool(await self._run(lambda: self._conn.fetchval(sql, lock)))

    @asynccontextmanager
    async def notices(
        self, channel: str, *, capacity: int = 1024
    ) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """``LISTEN`` on ``channel``; payloads arrive on the channel given (dropped when full)."""
        send, receive = trio.open_memory_channel[str](capacity)
        dropped = 0

        def on_notice(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            nonlocal dropped
            try:
                send.send_nowait(payload)
            except trio.WouldBlock:
                dropped += 1
                if dropped == 1 or dropped % 1000 == 0:
                    log.warning("store.notice_dropped", channel=channel, dropped=dropped)
            except trio.ClosedResourceError:
                pass

        await self._run(lambda: self._conn.add_listener(channel, on_notice))
        try:
            with receive:
                yield receive
        finally:
            send.close()


@asynccontextmanager
async def open_session(
    dsn: str, loop: asyncio.AbstractEventLoop, *, name: str, timeout_s: float
) -> AsyncIterator[PgSession]:
    """A dedicated connection named ``name`` in ``pg_stat_activity``; closed on the way out."""

    async def connect() -> Conn:
        return await asyncpg.connect(
            dsn,
            timeout=timeout_s,
            command_timeout=timeout_s,
            server_settings={"application_name": name[:63]},
        )

    try:
        with trio.fail_after(timeout_s * 2):
            conn = await trio_asyncio.aio_as_trio(connect, loop=loop)()
    except trio.TooSlowError:
        raise StoreUnavailable(f"postgres: no session within {timeout_s * 2:g} s") from None
    except DRIVER_ERRORS as exc:
        raise as_store_error(exc) from exc
    try:
        yield PgSession(conn, loop, timeout_s)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(timeout_s):
            try:
                await trio_asyncio.aio_as_trio(conn.close, loop=loop)(timeout=timeout_s)
            except Exception:  # a session the server ended: closing it is a formality
                conn.terminate()
