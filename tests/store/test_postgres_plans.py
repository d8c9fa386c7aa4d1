"""PostgreSQL reads one user's backlog from that user's rows, however many others are pending.

Right after a burst, ``inbox_pending`` holds thousands of entries; a read for one key
that lets the planner AND that index in walks them all, for every key. The reads are
checked by what the server did, not by timing: the backend's own index scan counters,
read inside the transaction that ran the read (a backend flushes them only when idle).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from concierge.protocol import Channel, Inbound, InboundMessage, utcnow
from concierge.store import migrate
from concierge.store.postgres import PostgresStore, open_postgres
from concierge.store.postgres_batches import flush_openings
from concierge.store.postgres_per_item import pending_inbox
from concierge.store.rows import Opening
from tests.store.conftest import fresh_schema
from tests.stores import store_settings

pytestmark = pytest.mark.anyio

OTHERS = 3000
ME = "telegram:424242"

Read = Callable[[Any, str, int], Awaitable[Sequence[Inbound]]]


@pytest.fixture
async def store(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[PostgresStore]:
    settings = store_settings(data_dir=tmp_path, database_url=await fresh_schema(pg_database))
    await migrate(settings)
    async with open_postgres(settings) as opened:
        yield opened


async def single_call(conn: Any, user_key: str, limit: int) -> Sequence[Inbound]:
    """What ``pending_inbox(user_key=...)`` runs."""
    return await pending_inbox(conn, user_key, limit)


async def batch_of_opens(conn: Any, user_key: str, limit: int) -> Sequence[Inbound]:
    """What a batch of ``open_conversation`` calls runs, for one of them."""
    opening = Opening(
        channel=Channel.TELEGRAM,
        user_key=user_key,
        display_name=None,
        pending_limit=limit,
        recent_limit=0,
    )
    [start] = await flush_openings(conn, [opening])
    assert not isinstance(start, Exception)
    return start.pending


async def index_scans(conn: Any, index: str) -> int:
    return int(await conn.fetchval("SELECT pg_stat_get_xact_numscans($1::regclass)", index))


@pytest.mark.parametrize("read", [single_call, batch_of_opens])
async def test_one_users_pending_rows_are_read_without_walking_everyones(
    store: PostgresStore, read: Read
) -> None:
    await store.fetchval(
        "INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind, "
        "received_at) SELECT 'c' || n, 'telegram', 'telegram:' || n, n::text, 'e' || n, 'hello', "
        "'text', now() FROM generate_series(1, $1::int) AS n",
        OTHERS,
    )
    mine = [
        await store.accept(
            InboundMessage(
                correlation_id=f"cid-{n}",
                channel=Channel.TELEGRAM,
                user_key=ME,
                chat_id=ME.partition(":")[2],
                external_id=f"{ME}:{n}",
                text=f"message {n}",
                received_at=utcnow(),
            )
        )
        for n in range(4)
    ]
    await store.mark_processed(mine[1].inbox_id)

    async def work(conn: Any) -> tuple[Sequence[Inbound], dict[str, int]]:
        indexes = ("inbox_pending", "inbox_user_key")
        async with conn.transaction():
            before = {i: await index_scans(conn, i) for i in indexes}
            rows = await read(conn, ME, 2)
            return rows, {i: await index_scans(conn, i) - before[i] for i in indexes}

    rows, scans = await store._call(work, retry=False)

    assert [r.inbox_id for r in rows] == [mine[0].inbox_id, mine[2].inbox_id]
    assert scans["inbox_user_key"] >= 1  # the counters count in this session
    assert scans["inbox_pending"] == 0
