"""PostgreSQL's set-based batches: concurrent opens and turns answer as one call at a time would.

Concurrent calls started together share a group-commit batch; each test checks that
the batches it relies on really held more than one item. Races with another
transaction are staged with a transaction held open on a second pooled connection
until the batch waits on its lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import structlog
import trio

from concierge.protocol import (
    Channel,
    ConversationStart,
    InboundMessage,
    Role,
    ServiceType,
    TurnRecord,
    utcnow,
)
from concierge.store import StoreError, migrate
from concierge.store.postgres import PostgresStore, open_postgres
from tests.store.conftest import fresh_schema
from tests.store.records import interaction, record_history, reply
from tests.stores import store_settings

pytestmark = pytest.mark.anyio

CONCURRENT = 50


@pytest.fixture
async def store(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[PostgresStore]:
    settings = store_settings(data_dir=tmp_path, database_url=await fresh_schema(pg_database))
    await migrate(settings)
    async with open_postgres(settings) as opened:
        yield opened


def inbound(n: int, *, user: str) -> InboundMessage:
    return InboundMessage(
        correlation_id=f"cid-{user}-{n}",
        channel=Channel.TELEGRAM,
        user_key=user,
        chat_id=user.partition(":")[2],
        external_id=f"{user}:{n}",
        text=f"message {n}",
        received_at=utcnow(),
        display_name="Marie",
    )


async def count(store: PostgresStore, table: str) -> int:
    return int(await store.fetchval(f"SELECT count(*) FROM {table}"))


async def all_at_once(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call in one nursery (so they share batches); results in call order."""
    results: list[Any] = [None] * len(calls)

    async def run(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except StoreError as exc:
            results[i] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(len(calls)):
                nursery.start_soon(run, i)
    return results


def splits(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Batches that fell back to one item at a time."""
    return [e for e in logs if e["event"] == "store.batch_split"]


async def holding(store: PostgresStore, statements: Sequence[str], held: trio.Event) -> None:
    """Run ``statements`` in a transaction; commit once another backend waits for a lock."""

    async def work(conn: Any) -> None:
        async with conn.transaction():
            for sql in statements:
                await conn.execute(sql)
            held.set()
            while True:
                # Within a transaction pg_stat_activity is a snapshot unless cleared.
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock')"
                ):
                    break
                await asyncio.sleep(0.005)

    await store._call(work, retry=False)


async def separately(
    store: PostgresStore, user_key: str, *, pending_limit: int, recent_limit: int
) -> ConversationStart:
    """What the one-purpose calls read for a user (each on its own statements)."""
    user_id = await store.resolve_user(Channel.TELEGRAM, user_key)
    conversation = await store.conversation_for(user_id)
    pending = (
        await store.pending_inbox(user_key=user_key, limit=pending_limit) if pending_limit else ()
    )
    return ConversationStart(
        user_id=user_id,
        conversation=conversation,
        handoff=await store.active_handoff(conversation.conversation_id),
        pending=tuple(pending),
        recent=tuple(await store.recent_turns(conversation.conversation_id, limit=recent_limit)),
    )


async def returning_user(store: PostgresStore, user_key: str, *, messages: int) -> int:
    """A known user with recorded messages; returns their conversation id."""
    conversation = await store.conversation_for(
        await store.resolve_user(Channel.TELEGRAM, user_key, display_name="Ancien nom")
    )
    cid = conversation.conversation_id
    await record_history(store, cid, [f"{user_key} t{n}" for n in range(messages)], user=user_key)
    return cid


# -- open_conversation ----------------------------------------------------------------------
async def test_a_batch_of_new_and_returning_users_reads_what_separate_calls_read(
    store: PostgresStore,
) -> None:
    returning = [f"telegram:{n}" for n in range(10)]
    for n, user in enumerate(returning):
        cid = await returning_user(store, user, messages=n)
        for m in range(n % 4):
            await store.accept(inbound(m, user=user))
        if n % 3 == 0:
            await store.open_handoff(
                conversation_id=cid, user_key=user, reason="prêtre", correlation_id=f"h{n}"
            )
    await store.mark_unreachable(returning[1])
    new = [f"telegram:{n}" for n in range(100, 100 + CONCURRENT - len(returning))]
    await store.accept(inbound(0, user=new[0]))  # a first message already waiting
    users = returning + new
    with structlog.testing.capture_logs() as logs:
        starts = await all_at_once(
            [
                partial(
                    store.open_conversation,
                    Channel.TELEGRAM,
                    u,
                    display_name=f"Nom {u}",
                    pending_limit=n % 3,
                    recent_limit=n % 5,
                )
                for n, u in enumerate(users)
            ]
        )
    assert store.open_committer.statistics().largest_batch > 1
    assert splits(logs) == []
    for n, (user, start) in enumerate(zip(users, starts, strict=True)):
        assert start == await separately(store, user, pending_limit=n % 3, recent_limit=n % 5)
        row = await store.user_for_key(user)
        assert row is not None
        assert (row.display_name, row.unreachable) == (f"Nom {user}", False)
    assert starts[0].handoff is not None
    assert [r.external_id for r in starts[2].pending] == ["telegram:2:0", "telegram:2:1"]
    assert [(t.role, t.text) for t in starts[8].recent] == [
        (Role.ASSISTANT, "telegram:8 t5"),
        (Role.USER, "telegram:8 t6"),
        (Role.ASSISTANT, "telegram:8 t7"),
    ]
    assert await count(store, "users") == len(users)
    assert await count(store, "conversations") == len(users)


async def test_the_same_user_opened_many_times_in_a_batch_is_one_user_with_each_callers_limits(
    store: PostgresStore,
) -> None:
    cid = await returning_user(store, "telegram:1", messages=6)
    for m in range(5):
        await store.accept(inbound(m, user="telegram:1"))
    names = [None, "Marie", None, "Marie D.", None]
    with structlog.testing.capture_logs() as logs:
        starts = await all_at_once(
            [
                partial(
                    store.open_conversation,
                    Channel.TELEGRAM,
                    user,
                    display_name=names[n % len(names)],
                    pending_limit=n % 6,
                    recent_limit=n % 7,
                )
                for n in range(CONCURRENT)
                for user in ("telegram:1", "telegram:2")
            ]
        )
    assert store.open_committer.statistics().largest_batch > 1
    assert splits(logs) == []
    for n in range(CONCURRENT):
        known, new = starts[2 * n], starts[2 * n + 1]
        assert known.conversation.conversation_id == cid
        assert len(known.pending) == n % 6
        assert [t.text for t in known.recent] == [f"telegram:1 t{m}" for m in range(6)][
            6 - min(n % 7, 6) :
        ]
        assert new.user_id == starts[1].user_id
        assert new.conversation == starts[1].conversation
    assert await count(store, "users") == 2
    assert await count(store, "conversations") == 2
    for user in ("telegram:1", "telegram:2"):
        row = await store.user_for_key(user)
        assert row is not None
        assert row.display_name in {"Marie", "Marie D."}


async def test_a_first_contact_that_loses_the_race_resolves_to_the_winners_user(
    store: PostgresStore,
) -> None:
    held = trio.Event()
    winner = "telegram:7"
    others = [f"telegram:{n}" for n in range(20, 30)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                holding,
                store,
                [
                    "INSERT INTO users (user_id, display_name) VALUES (7000, 'Gagnant')",
                    "INSERT INTO identities (user_id, channel, user_key) "
                    f"VALUES (7000, 'telegram', '{winner}')",
                ],
                held,
            )
            await held.wait()
            starts = await all_at_once(
                [
                    partial(
                        store.open_conversation,
                        Channel.TELEGRAM,
                        u,
                        display_name="Perdant",
                        pending_limit=1,
                        recent_limit=1,
                    )
                    for u in [winner, *others, winner]
                ]
            )
    assert starts[0].user_id == starts[-1].user_id == 7000
    assert starts[0].conversation == starts[-1].conversation
    assert len({s.user_id for s in starts}) == len(others) + 1
    assert await count(store, "users") == len(others) + 1  # the loser's user was never made
    row = await store.user_for_key(winner)
    assert row is not None
    assert row.display_name == "Perdant"  # the name the user has now


async def test_a_conversation_created_meanwhile_by_another_transaction_is_the_one_returned(
    store: PostgresStore,
) -> None:
    user_id = await store.resolve_user(Channel.TELEGRAM, "telegram:1")
    held = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                holding,
                store,
                [
                    "INSERT INTO conversations (conversation_id, user_id, service_type) "
                    f"VALUES (9000, {user_id}, 'CATECHESE')"
                ],
                held,
            )
            await held.wait()
            start = await store.open_conversation(
                Channel.TELEGRAM, "telegram:1", pending_limit=0, recent_limit=4
            )
    assert start.conversation.conversation_id == 9000
    assert start.conversation.service_type is ServiceType.CATECHESE
    assert await count(store, "conversations") == 1


async def test_an_opening_the_server_refuses_fails_alone_and_the_rest_of_its_batch_opens(
    store: PostgresStore,
) -> None:
    users = [f"telegram:{n}" for n in range(CONCURRENT)]
    bad = users[17]
    with structlog.testing.capture_logs() as logs:
        starts = await all_at_once(
            [
                partial(
                    store.open_conversation,
                    Channel.TELEGRAM,
                    u,
                    display_name="nul\x00" if u == bad else "Marie",
                    pending_limit=1,
                    recent_limit=1,
                )
                for u in users
            ]
        )
    assert store.open_committer.statistics().largest_batch > 1
    assert splits(logs)
    assert isinstance(starts[17], StoreError)
    assert all(isinstance(s, ConversationStart) for n, s in enumerate(starts) if n != 17)
    assert await store.user_for_key(bad) is None
    assert await count(store, "users") == await count(store, "conversations") == CONCURRENT - 1


# -- complete_turn ----------------------------------------------------------------------------
class Row(NamedTuple):
    """A user's new inbox row and their conversation."""

    inbox_id: int
    conversation_id: int
    user: str
    user_id: int


async def pending_rows(store: PostgresStore, users: int) -> list[Row]:
    rows = []
    for n in range(users):
        user = f"telegram:{n}"
        start = await store.open_conversation(
            Channel.TELEGRAM, user, pending_limit=0, recent_limit=0
        )
        accepted = await store.accept(inbound(0, user=user))
        rows.append(Row(accepted.inbox_id, start.conversation.conversation_id, user, start.user_id))
    return rows


def turn(
    row: Row,
    *,
    replies: int = 1,
    target: int | None = None,
    conversation_type: ServiceType | None = ServiceType.CATECHESE,
) -> TurnRecord:
    inbox_id, conversation_id, user, _ = row
    written = tuple(
        reply(f"r{inbox_id}.{k}", user=user, inbox_id=target or inbox_id) for k in range(replies)
    )
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        correlation_id=f"cid-{inbox_id}",
        service_type=ServiceType.CATECHESE,
        inbound_text=f"q{inbox_id}",
        outbound_text=f"a{inbox_id}" if replies else None,
        replies=written,
        interaction=interaction(conversation_id, f"cid-{inbox_id}"),
        conversation_type=conversation_type,
    )


async def written(store: PostgresStore) -> tuple[int, int, int]:
    return (
        await count(store, "messages"),
        await count(store, "outbox"),
        await count(store, "interactions"),
    )


async def test_a_batch_of_turns_writes_each_turn_as_one_call_would(store: PostgresStore) -> None:
    rows = await pending_rows(store, CONCURRENT)
    types = [ServiceType.CATECHESE, None, ServiceType.CONTACT_HUMAIN]
    turns = [turn(row, replies=n % 4, conversation_type=types[n % 3]) for n, row in enumerate(rows)]
    before = [(await store.conversation_for(row.user_id)).updated_at for row in rows]
    with structlog.testing.capture_logs() as logs:
        results = await all_at_once([partial(store.complete_turn, t) for t in turns])
    assert store.turn_committer.statistics().largest_batch > 1
    assert splits(logs) == []
    outbox = {r.outbox_id: r for r in await store.pending_outbox(Channel.TELEGRAM, limit=1000)}
    for n, ((inbox_id, cid, _, user_id), ids) in enumerate(zip(rows, results, strict=True)):
        assert len(ids) == n % 4
        assert list(ids) == sorted(ids)
        assert [(outbox[i].text, outbox[i].inbox_id) for i in ids] == [
            (f"r{inbox_id}.{k}", inbox_id) for k in range(n % 4)
        ]
        recent = await store.recent_turns(cid, limit=10)
        expected = [(Role.USER, f"q{inbox_id}")]
        if n % 4:
            expected.append((Role.ASSISTANT, f"a{inbox_id}"))
        assert [(t.role, t.text) for t in recent] == expected
        conversation = await store.conversation_for(user_id)
        assert conversation.conversation_id == cid
        assert conversation.service_type is (types[n % 3] or ServiceType.RENSEIGNEMENT)
        assert conversation.updated_at > before[n]
    assert await store.pending_inbox() == []
    assert await count(store, "interactions") == CONCURRENT


async def test_turns_of_one_row_in_a_batch_claim_it_once(store: PostgresStore) -> None:
    rows = await pending_rows(store, 10)
    turns = [turn(row) for row in rows] * 5
    results = await all_at_once([partial(store.complete_turn, t) for t in turns])
    assert store.turn_committer.statistics().largest_batch > 1
    for n in range(10):
        assert sorted(len(results[n + 10 * k]) for k in range(5)) == [0, 0, 0, 0, 1]
    assert await written(store) == (20, 10, 10)


async def test_a_row_processed_meanwhile_by_another_transaction_is_left_alone(
    store: PostgresStore,
) -> None:
    rows = await pending_rows(store, 10)
    taken = rows[3][0]
    held = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                holding,
                store,
                [f"UPDATE inbox SET processed_at = now() WHERE inbox_id = {taken}"],
                held,
            )
            await held.wait()
            results = await all_at_once([partial(store.complete_turn, turn(r)) for r in rows])
    assert results[3] == ()
    assert all(len(ids) == 1 for n, ids in enumerate(results) if n != 3)
    assert await written(store) == (18, 9, 9)
    assert await store.recent_turns(rows[3][1], limit=10) == []


async def test_two_overlapping_batches_each_claim_their_share_without_deadlock(
    store: PostgresStore,
) -> None:
    rows = await pending_rows(store, 200)
    forward = [turn(row) for row in rows]
    claims: dict[int, int] = {row.inbox_id: 0 for row in rows}

    async def flush(batch: list[TurnRecord]) -> None:
        """One batch as a flusher hands it over (the two run on two connections at once)."""
        for t, ids in zip(batch, await store._complete_turns(batch), strict=True):
            assert not isinstance(ids, Exception)
            claims[t.inbox_id] += len(ids)

    with structlog.testing.capture_logs() as logs:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush, forward)
                nursery.start_soon(flush, forward[::-1])
    assert splits(logs) == []
    assert set(claims.values()) == {1}
    assert await written(store) == (400, 200, 200)
    assert await store.pending_inbox() == []


async def test_a_turn_the_server_refuses_fails_alone_and_the_rest_of_its_batch_commits(
    store: PostgresStore,
) -> None:
    rows = await pending_rows(store, CONCURRENT)
    bad = rows[11].inbox_id
    turns = [turn(row, target=bad + 10_000 if row.inbox_id == bad else None) for row in rows]
    with structlog.testing.capture_logs() as logs:
        results = await all_at_once([partial(store.complete_turn, t) for t in turns])
    assert store.turn_committer.statistics().largest_batch > 1
    assert splits(logs)
    assert isinstance(results[11], StoreError)
    assert all(len(ids) == 1 for n, ids in enumerate(results) if n != 11)
    assert [r.inbox_id for r in await store.pending_inbox()] == [bad]
    assert await written(store) == (2 * (CONCURRENT - 1), CONCURRENT - 1, CONCURRENT - 1)


async def test_backlog_reads_of_many_users_share_a_statement_and_keep_their_own_limits(
    store: PostgresStore,
) -> None:
    users = [f"telegram:{700 + i}" for i in range(CONCURRENT)]
    for user in users:
        for n in range(3):
            await store.accept(inbound(n, user=user))
    first = await store.pending_inbox(user_key=users[0], limit=1)
    await store.complete_turn(
        TurnRecord(
            inbox_id=first[0].inbox_id,
            conversation_id=None,
            correlation_id="cid-done",
            service_type=None,
        )
    )
    asks = [(user, 1 + i % 3) for i, user in enumerate(users)] + [(users[1], 0), ("telegram:1", 5)]
    results = await all_at_once(
        [partial(store.pending_inbox, user_key=u, limit=n) for u, n in asks]
    )
    assert store.pending_reader.statistics().largest_batch > 1
    for (user, limit), rows in zip(asks, results, strict=True):
        mine = [f"{user}:{n}" for n in range(3)] if user in users else []  # telegram:1 has none
        expected = mine[1 if user == users[0] else 0 :][:limit]
        assert [row.external_id for row in rows] == expected, (user, limit)
        assert all(row.user_key == user for row in rows)
    returned = ",".join(str(row.inbox_id) for rows in results for row in rows)
    processed = (
        f"SELECT count(*) FROM inbox WHERE inbox_id IN ({returned}) AND processed_at IS NOT NULL"
    )
    assert await store.fetchval(processed) == 0
