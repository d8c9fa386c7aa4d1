"""The embedded store's batches: a batch of accepts, opens or turns runs as a few set-based
statements, answers each caller as if its call had run alone, and still fails a bad item alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from structlog.testing import capture_logs

from concierge.protocol import (
    Accepted,
    AcceptStatus,
    Channel,
    ConversationStart,
    InboundMessage,
    Interaction,
    OutboundReply,
    Role,
    ServiceType,
    TurnRecord,
    utcnow,
)
from concierge.store import StoreError, StoreUnavailable, open_store
from concierge.store.migrations import apply_sqlite
from concierge.store.rows import Opening
from concierge.store.sqlite import SqliteStore, _connect, ts
from concierge.store.sqlite_batches import in_savepoints, open_rows, turn_rows, whole_or_each
from concierge.store.sqlite_per_item import open_conversation, write_turn
from tests.store import records
from tests.store.records import interaction, record_history
from tests.store.test_sqlite_store import Blocker
from tests.stores import store_settings

pytestmark = pytest.mark.anyio

Call = Callable[[], Awaitable[Any]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(store_settings(data_dir=tmp_path)) as opened:
        assert isinstance(opened, SqliteStore)
        yield opened


async def one_batch(
    store: SqliteStore, leaders: tuple[Call, Call], calls: Sequence[Call]
) -> list[Any]:
    """The outcomes (result or exception) of ``calls``, made to share one batch in the given order.

    The worker thread is held while everything queues: the first leader goes to its
    committer directly and the second is the flusher's first batch, so both wait in
    the worker's queue; the calls wait in the committer's, in order, until the flusher
    takes them all at once.
    """
    outcomes: dict[int, Any] = {}

    async def keep(i: int, call: Call) -> None:
        try:
            outcomes[i] = await call()
        except Exception as exc:
            outcomes[i] = exc

    blocker = Blocker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run, blocker)
        await blocker.wait_entered()
        for i, call in enumerate([*leaders, *calls]):
            nursery.start_soon(keep, i, call)
            await trio.testing.wait_all_tasks_blocked()
        blocker.release.set()
    return [outcomes[i] for i in range(2, len(calls) + 2)]


def message(external_id: str, *, user: str = "telegram:1", text: str = "Bonjour") -> InboundMessage:
    return InboundMessage(
        correlation_id=f"cid-{external_id}-{text}",
        channel=Channel.TELEGRAM,
        user_key=user,
        chat_id=user.partition(":")[2],
        external_id=external_id,
        text=text,
        received_at=utcnow(),
        display_name="Marie",
    )


def reply(text: str, *, inbox_id: int | None) -> OutboundReply:
    return records.reply(text, inbox_id=inbox_id, user="telegram:1")


def turn(
    inbox_id: int,
    conversation_id: int,
    *replies: OutboundReply,
    conversation_type: ServiceType | None = ServiceType.CATECHESE,
) -> TurnRecord:
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        correlation_id=f"cid-{inbox_id}",
        service_type=ServiceType.CATECHESE,
        inbound_text=f"question {inbox_id}",
        outbound_text=replies[0].text if replies else None,
        replies=replies,
        interaction=interaction(conversation_id, f"cid-{inbox_id}"),
        conversation_type=conversation_type,
    )


async def rows_of(store: SqliteStore, sql: str) -> list[tuple[Any, ...]]:
    return await store._run(lambda conn: [tuple(r) for r in conn.execute(sql)])


def accept(store: SqliteStore, m: InboundMessage) -> Call:
    return lambda: store.accept(m)


def complete(store: SqliteStore, t: TurnRecord) -> Call:
    return lambda: store.complete_turn(t)


def open_(
    store: SqliteStore,
    user_key: str,
    *,
    display_name: str | None = None,
    pending_limit: int = 10,
    recent_limit: int = 10,
) -> Call:
    return lambda: store.open_conversation(
        Channel.TELEGRAM,
        user_key,
        display_name=display_name,
        pending_limit=pending_limit,
        recent_limit=recent_limit,
    )


# -- accept ---------------------------------------------------------------------------
async def test_a_batch_of_accepts_answers_a_repeat_with_the_first_row_and_keeps_arrival_order(
    store: SqliteStore,
) -> None:
    stored = await store.accept(message("stored"))
    first, again, old, other = await one_batch(
        store,
        (accept(store, message("lead-1")), accept(store, message("lead-2"))),
        [
            accept(store, message("new", text="first")),
            accept(store, message("new", text="second")),
            accept(store, message("stored")),
            accept(store, message("other")),
        ],
    )
    assert store.committer.statistics().largest_batch == 4
    assert first.status is AcceptStatus.NEW
    assert again == Accepted(status=AcceptStatus.DUPLICATE, inbox_id=first.inbox_id)
    assert old == Accepted(status=AcceptStatus.DUPLICATE, inbox_id=stored.inbox_id)
    assert other.status is AcceptStatus.NEW
    assert other.inbox_id > first.inbox_id
    pending = await store.pending_inbox()
    assert [(r.external_id, r.text) for r in pending] == [
        ("stored", "Bonjour"),
        ("lead-1", "Bonjour"),
        ("lead-2", "Bonjour"),
        ("new", "first"),
        ("other", "Bonjour"),
    ]


async def test_a_nul_character_reaches_the_file_intact_batched_or_not(store: SqliteStore) -> None:
    text = "avant\x00après"
    lone = await store.accept(message("lone", text=text))
    batched = await one_batch(
        store,
        (accept(store, message("lead-1")), accept(store, message("lead-2"))),
        [accept(store, message("nul", text=text)), accept(store, message("plain"))],
    )
    assert [a.status for a in [lone, *batched]] == [AcceptStatus.NEW] * 3
    cid = (
        await store.open_conversation(
            Channel.TELEGRAM, "telegram:1", pending_limit=0, recent_limit=0
        )
    ).conversation.conversation_id
    nul = batched[0].inbox_id
    assert [r.text for r in await store.pending_inbox() if r.inbox_id in (lone.inbox_id, nul)] == [
        text,
        text,
    ]
    await one_batch(
        store,
        (
            complete(store, turn(lone.inbox_id, cid)),
            complete(store, turn(batched[1].inbox_id, cid)),
        ),
        [complete(store, turn(nul, cid, reply(text, inbox_id=nul)))],
    )
    assert [r.text for r in await store.pending_outbox(Channel.TELEGRAM)] == [text]
    assert [t.text for t in await store.recent_turns(cid, limit=1)] == [text]


# -- open_conversation ----------------------------------------------------------------
async def returning_user(store: SqliteStore) -> tuple[int, int, int, list[int]]:
    """A user with history, a pending backlog, an open handoff, marked unreachable.

    Returns (user_id, conversation_id, handoff_id, pending inbox ids).
    """
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:1", display_name="Marie", pending_limit=0, recent_limit=0
    )
    cid = start.conversation.conversation_id
    await record_history(store, cid, ["t0", "t1", "", "t3", "t4"], user="telegram:1")
    handoff = await store.open_handoff(
        conversation_id=cid, user_key="telegram:1", reason="priest", correlation_id="c9"
    )
    pending = [(await store.accept(message(f"p{n}"))).inbox_id for n in range(3)]
    await store.mark_unreachable("telegram:1")
    return start.user_id, cid, handoff.handoff_id, pending


async def test_a_batch_of_opens_gives_each_caller_what_a_lone_open_would(
    store: SqliteStore,
) -> None:
    uid, cid, handoff_id, pending = await returning_user(store)
    waiting = await store.accept(message("w1", user="telegram:3"))  # before their first open
    back, back_again, new, new_again, waited = await one_batch(
        store,
        (open_(store, "telegram:lead-1"), open_(store, "telegram:lead-2")),
        [
            open_(store, "telegram:1", display_name="Marie D.", pending_limit=2, recent_limit=3),
            open_(store, "telegram:1", pending_limit=0, recent_limit=0),
            open_(store, "telegram:2", display_name="Jean"),
            open_(store, "telegram:2", display_name="Jean-Paul", pending_limit=1),
            open_(store, "telegram:3"),
        ],
    )
    assert store.open_committer.statistics().largest_batch == 5
    assert isinstance(back, ConversationStart)
    assert (back.user_id, back.conversation.conversation_id) == (uid, cid)
    assert back.conversation.handoff_open
    assert back.handoff is not None
    assert back.handoff.handoff_id == handoff_id
    assert [r.inbox_id for r in back.pending] == pending[:2]
    assert back.pending == tuple(await store.pending_inbox(user_key="telegram:1", limit=2))
    assert [(t.role, t.text) for t in back.recent] == [
        (Role.ASSISTANT, "t1"),
        (Role.ASSISTANT, "t3"),
        (Role.USER, "t4"),
    ]
    assert back_again == ConversationStart(
        user_id=uid, conversation=back.conversation, handoff=back.handoff, pending=(), recent=()
    )
    assert new.user_id == new_again.user_id != uid
    assert new.conversation == new_again.conversation
    assert (new.handoff, new.pending, new.recent) == (None, (), ())
    assert waited.pending == tuple(await store.pending_inbox(user_key="telegram:3"))
    assert [r.inbox_id for r in waited.pending] == [waiting.inbox_id]
    marie = await store.user_for_key("telegram:1")
    jean = await store.user_for_key("telegram:2")
    assert marie is not None
    assert jean is not None
    assert (marie.display_name, marie.unreachable) == ("Marie D.", False)
    assert jean.display_name == "Jean-Paul"
    assert await rows_of(store, "SELECT count(*) FROM users") == [(5,)]
    assert await rows_of(store, "SELECT count(*) FROM conversations") == [(5,)]


async def test_many_concurrent_opens_share_batches(store: SqliteStore) -> None:
    starts: dict[int, ConversationStart] = {}

    async def open_one(n: int) -> None:
        starts[n] = await store.open_conversation(
            Channel.TELEGRAM, f"telegram:{n % 25}", pending_limit=5, recent_limit=5
        )

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(open_one, n)
    assert store.open_committer.statistics().largest_batch > 1
    for n in range(25):
        assert starts[n] == starts[n + 25]
    assert len({s.user_id for s in starts.values()}) == 25
    assert await rows_of(store, "SELECT count(*) FROM identities") == [(25,)]


# -- complete_turn --------------------------------------------------------------------
async def test_a_batch_of_turns_writes_each_turn_once_in_batch_order(store: SqliteStore) -> None:
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:1", pending_limit=0, recent_limit=0
    )
    cid = start.conversation.conversation_id
    a, b, done, c, d, e, f = [(await store.accept(message(f"m{n}"))).inbox_id for n in range(7)]
    await store.mark_processed(done)
    with capture_logs() as logs:
        outcomes = await one_batch(
            store,
            (complete(store, turn(a, cid)), complete(store, turn(b, cid))),
            [
                complete(store, turn(c, cid, reply("c1", inbox_id=c), reply("c2", inbox_id=c))),
                complete(store, turn(c, cid, reply("c again", inbox_id=c))),
                complete(store, turn(done, cid, reply("too late", inbox_id=done))),
                complete(
                    store,
                    TurnRecord(
                        inbox_id=d,
                        conversation_id=None,
                        correlation_id="busy",
                        service_type=None,
                        replies=(reply("un instant", inbox_id=d),),
                    ),
                ),
                complete(store, turn(e, cid, conversation_type=ServiceType.CONTACT_HUMAIN)),
                complete(store, turn(f, cid, reply("f1", inbox_id=f), conversation_type=None)),
            ],
        )
    assert not [line for line in logs if line["event"] == "store.batch_replayed_per_item"]
    assert store.turn_committer.statistics().largest_batch == 6
    pair, again, late, busy, quiet, last = outcomes
    assert again == late == quiet == ()
    assert len(pair) == 2
    assert len(busy) == 1
    assert len(last) == 1
    assert [*pair, *busy, *last] == sorted([*pair, *busy, *last])
    outbox = await store.pending_outbox(Channel.TELEGRAM)
    assert [(r.outbox_id, r.text, r.inbox_id) for r in outbox][-4:] == [
        (pair[0], "c1", c),
        (pair[1], "c2", c),
        (busy[0], "un instant", d),
        (last[0], "f1", f),
    ]
    assert await store.pending_inbox() == []
    assert await rows_of(
        store,
        f"SELECT inbox_id, service_type FROM inbox WHERE inbox_id IN ({c}, {d}, {done}) ORDER BY 1",
    ) == [(done, None), (c, "CATECHESE"), (d, None)]
    messages = await rows_of(store, "SELECT direction, text FROM messages ORDER BY message_id")
    assert messages == [
        ("inbound", f"question {a}"),
        ("inbound", f"question {b}"),
        ("inbound", f"question {c}"),
        ("outbound", "c1"),
        ("inbound", f"question {e}"),
        ("inbound", f"question {f}"),
        ("outbound", "f1"),
    ]
    assert await rows_of(store, "SELECT count(*) FROM interactions") == [(5,)]
    # The last type a turn set wins; a turn that sets none keeps it.
    assert (await store.conversation_for(start.user_id)).service_type is ServiceType.CONTACT_HUMAIN


async def test_a_turn_that_breaks_a_constraint_fails_alone_and_its_batch_commits(
    store: SqliteStore,
) -> None:
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:1", pending_limit=0, recent_limit=0
    )
    cid = start.conversation.conversation_id
    rows = [(await store.accept(message(f"m{n}"))).inbox_id for n in range(6)]
    lead, lead_2, good, bad, same, late = rows
    with capture_logs() as logs:
        outcomes = await one_batch(
            store,
            (complete(store, turn(lead, cid)), complete(store, turn(lead_2, cid))),
            [
                complete(store, turn(good, cid, reply("good", inbox_id=good))),
                complete(store, turn(bad, cid + 1000, reply("no such conversation", inbox_id=bad))),
                complete(store, turn(same, cid, reply("same", inbox_id=same))),
                complete(store, turn(same, cid, reply("same again", inbox_id=same))),
                complete(store, turn(late, cid, reply("late", inbox_id=late))),
            ],
        )
    assert [line["batch"] for line in logs if line["event"] == "store.batch_replayed_per_item"] == [
        "turns"
    ]
    assert store.turn_committer.statistics().largest_batch == 5
    done_good, failed, done_same, again, done_late = outcomes
    assert isinstance(failed, StoreError)
    assert not isinstance(failed, StoreUnavailable)
    assert "FOREIGN KEY" in str(failed)
    assert again == ()
    assert [r.text for r in await store.pending_outbox(Channel.TELEGRAM)] == [
        "good",
        "same",
        "late",
    ]
    assert [r.outbox_id for r in await store.pending_outbox(Channel.TELEGRAM)] == [
        *done_good,
        *done_same,
        *done_late,
    ]
    assert [r.inbox_id for r in await store.pending_inbox()] == [bad]


async def test_a_batch_runs_a_few_statements_whatever_its_size(store: SqliteStore) -> None:
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:1", pending_limit=0, recent_limit=0
    )
    cid = start.conversation.conversation_id
    statements: list[str] = []
    await store._run(lambda conn: conn.set_trace_callback(statements.append))
    largest: list[int] = []
    for size in (5, 60):
        rows = [(await store.accept(message(f"{size}-{n}"))).inbox_id for n in range(size + 2)]
        statements.clear()
        await one_batch(
            store,
            (complete(store, turn(rows[0], cid)), complete(store, turn(rows[1], cid))),
            [complete(store, turn(i, cid, reply(f"r{i}", inbox_id=i))) for i in rows[2:]],
        )
        largest.append(max(len(tx) for tx in transactions(statements)))
    await store._run(lambda conn: conn.set_trace_callback(None))
    assert largest[0] == largest[1] <= 10


def transactions(statements: list[str]) -> Iterator[list[str]]:
    """The statements the store sent, per transaction.

    SQLite traces each statement a trigger runs as a repeat of the statement that fired
    it: those repeats are not statements the store sent.
    """
    current: list[str] = []
    for sql in statements:
        if current and sql == current[-1]:
            continue
        if sql.startswith("BEGIN"):
            current = []
        current.append(sql)
        if sql.startswith("COMMIT"):
            yield current


async def test_a_database_error_fails_the_whole_batch_and_an_item_error_replays_it(
    store: SqliteStore,
) -> None:
    def locked(conn: sqlite3.Connection) -> list[int]:
        conn.execute("INSERT INTO channel_cursors VALUES ('whole', '1', 'now')")
        raise sqlite3.OperationalError("database is locked")

    def broken(conn: sqlite3.Connection) -> list[int]:
        conn.execute("INSERT INTO channel_cursors VALUES ('whole', '1', 'now')")
        raise sqlite3.IntegrityError("CHECK constraint failed")

    def each(conn: sqlite3.Connection) -> list[int | Exception]:
        conn.execute("INSERT INTO channel_cursors VALUES ('each', '1', 'now')")
        return [1, ValueError("bad item")]

    with pytest.raises(StoreUnavailable, match="locked"):
        await store._run(lambda conn: whole_or_each(conn, locked, each, batch="test"))
    assert await store.get_cursor("whole") is None
    assert await store.get_cursor("each") is None
    outcome = await store._run(lambda conn: whole_or_each(conn, broken, each, batch="test"))
    assert outcome[0] == 1
    assert isinstance(outcome[1], ValueError)
    assert await store.get_cursor("whole") is None
    assert await store.get_cursor("each") == "1"


# -- the set-based statements against the per-item ones ---------------------------------
# Both run on the same state in one transaction, rolled back in between: same results,
# same rows, same ids.

KEYS = ["telegram:1", "telegram:2", "telegram:3", "telegram:4", "waha:1@c.us", "telegram:9"]
NOW = "2026-11-27T13:15:38.000000Z"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """Users 1-3 (3 unreachable, named Paul; 1 also on WAHA) with conversations, history,
    pending rows, a handoff and processed rows; telegram:4 and telegram:9 have no user.
    """
    conn = _connect(tmp_path_factory.mktemp("seeded") / "store.sqlite3", 5.0)
    apply_sqlite(conn)
    old = ts(utcnow() - timedelta(days=1))
    script = [
        "INSERT INTO users (display_name, unreachable, created_at) VALUES "
        f"('Marie', 0, '{old}'), (NULL, 0, '{old}'), ('Paul', 1, '{old}')",
        "INSERT INTO identities (user_id, channel, user_key, created_at) VALUES "
        f"(1, 'telegram', 'telegram:1', '{old}'), (2, 'telegram', 'telegram:2', '{old}'), "
        f"(3, 'telegram', 'telegram:3', '{old}'), (1, 'waha', 'waha:1@c.us', '{old}')",
        "INSERT INTO conversations (user_id, service_type, handoff_open, created_at, updated_at) "
        f"VALUES (1, 'CATECHESE', 1, '{old}', '{old}'), (3, 'RENSEIGNEMENT', 0, '{old}', '{old}')",
        "INSERT INTO handoffs (conversation_id, user_key, state, reason, correlation_id, opened_at) "
        f"VALUES (1, 'telegram:1', 'open', 'priest', 'h', '{old}')",
    ]
    for n in range(9):
        script.append(
            "INSERT INTO messages (conversation_id, direction, text, service_type, correlation_id, "
            f"created_at) VALUES ({1 + n % 2 * 1}, '{('inbound', 'outbound')[n % 2]}', "
            f"'{'' if n == 4 else f't{n}'}', 'CATECHESE', 'c{n}', '{old}')"
        )
    for n, key in enumerate(["telegram:1", "telegram:4", "telegram:1", "telegram:3", "telegram:1"]):
        script.append(
            "INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, "
            "kind, received_at, accepted_at, processed_at) VALUES "
            f"('c{n}', 'telegram', '{key}', '1', 'e{n}', 'q{n}', 'text', '{old}', '{old}', "
            f"{'NULL' if n != 3 else repr(old)})"
        )
    for sql in script:
        conn.execute(sql)
    yield conn
    conn.close()


Rows = dict[str, list[tuple[Any, ...]]]


def both_ways(
    conn: sqlite3.Connection,
    whole: Callable[[sqlite3.Connection], list[Any]],
    each: Callable[[sqlite3.Connection], list[Any]],
) -> tuple[tuple[list[Any], Rows], tuple[list[Any], Rows]]:
    """(results, rows) of ``whole`` and of ``each``, from the same state, leaving it as it was."""
    outcomes = []
    for work in (whole, each):
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes.append((work(conn), dump(conn)))
        finally:
            conn.execute("ROLLBACK")
    return outcomes[0], outcomes[1]


def assert_same(whole: tuple[list[Any], Rows], each: tuple[list[Any], Rows]) -> None:
    assert whole[0] == each[0]
    for table, rows in each[1].items():
        assert (table, whole[1][table]) == (table, rows)


def dump(conn: sqlite3.Connection) -> Rows:
    tables = ["users", "identities", "conversations", "messages", "inbox", "outbox"]
    tables += ["interactions", "handoffs", "sqlite_sequence"]
    return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in tables}


openings = st.builds(
    Opening,
    channel=st.just(Channel.TELEGRAM),
    user_key=st.sampled_from(KEYS),
    display_name=st.sampled_from([None, None, "Marie", "Jean"]),
    pending_limit=st.integers(min_value=-1, max_value=4),
    recent_limit=st.integers(min_value=-1, max_value=5),
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(openings, min_size=1, max_size=8))
def test_a_batch_of_opens_matches_the_opens_one_by_one(
    seeded: sqlite3.Connection, batch: list[Opening]
) -> None:
    batch = [
        Opening(
            channel=Channel.WAHA if o.user_key.startswith("waha:") else Channel.TELEGRAM,
            user_key=o.user_key,
            display_name=o.display_name,
            pending_limit=o.pending_limit,
            recent_limit=o.recent_limit,
        )
        for o in batch
    ]
    whole, each = both_ways(
        seeded,
        lambda conn: open_rows(conn, batch, NOW),
        lambda conn: in_savepoints(conn, batch, lambda c, o: open_conversation(c, o, NOW)),
    )
    assert_same(whole, each)


@st.composite
def turns(draw: st.DrawFn) -> TurnRecord:
    inbox_id = draw(st.integers(min_value=1, max_value=6))  # 4 is processed, 6 does not exist
    conversation_id = draw(st.sampled_from([None, 1, 2]))
    records = conversation_id is not None and draw(st.booleans())
    texts = [draw(st.sampled_from([None, "", "x", "y"])) if records else None for _ in range(2)]
    replies = tuple(
        reply(f"r{inbox_id}.{n}", inbox_id=draw(st.sampled_from([None, inbox_id % 6 or 1])))
        for n in range(draw(st.integers(min_value=0, max_value=2)))
    )
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        correlation_id=f"cid-{inbox_id}",
        service_type=draw(st.sampled_from([ServiceType.CATECHESE, ServiceType.CONTACT_HUMAIN]))
        if records
        else draw(st.sampled_from([None, ServiceType.CATECHESE])),
        inbound_text=texts[0],
        outbound_text=texts[1],
        replies=replies,
        interaction=None
        if conversation_id is None or not draw(st.booleans())
        else Interaction(
            correlation_id=f"cid-{inbox_id}",
            conversation_id=conversation_id,
            provider="p",
            model="m",
            key_alias="k",
            latency_s=0.25,
            tokens_in=3,
            tokens_out=4,
            outcome="ok",
            service_type=ServiceType.CATECHESE,
            created_at=utcnow(),
        ),
        conversation_type=draw(
            st.sampled_from([None, ServiceType.CONTACT_HUMAIN, ServiceType.RENSEIGNEMENT])
        )
        if records
        else None,
    )


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(turns(), min_size=1, max_size=8))
def test_a_batch_of_turns_matches_the_turns_one_by_one(
    seeded: sqlite3.Connection, batch: list[TurnRecord]
) -> None:
    whole, each = both_ways(
        seeded,
        lambda conn: turn_rows(conn, batch, NOW),
        lambda conn: in_savepoints(conn, batch, lambda c, t: write_turn(c, t, NOW)),
    )
    assert_same(whole, each)
