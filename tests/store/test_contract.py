"""The ``Store`` contract, run unchanged against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from concierge.domain import forget_user
from concierge.protocol import (
    Accepted,
    AcceptStatus,
    Channel,
    HandoffRow,
    HandoffState,
    InboundMessage,
    OutboundReply,
    Role,
    ServiceType,
    TurnRecord,
    person_key,
    utcnow,
)
from concierge.settings import StoreSettings
from concierge.store import (
    Store,
    StoreError,
    StoreUnavailable,
    UnknownUser,
    migrate,
    open_store,
)
from concierge.store.erasure_keys import erasure_digest
from concierge.store.postgres import PostgresStore
from concierge.store.sqlite import SqliteStore
from tests.store.records import interaction, record_history, reply

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


def inbound(
    external_id: str,
    *,
    user: str = "telegram:111",
    text: str = "Bonjour",
    channel: Channel = Channel.TELEGRAM,
) -> InboundMessage:
    return InboundMessage(
        correlation_id=f"cid-{external_id}",
        channel=channel,
        user_key=user,
        chat_id=user.partition(":")[2],
        external_id=external_id,
        text=text,
        received_at=utcnow(),
        display_name="Marie",
    )


async def scalar(store: Store, sql: str) -> Any:
    """One value read behind the interface (for checks the protocol has no reader for)."""
    if isinstance(store, PostgresStore):
        return await store.fetchval(sql)
    assert isinstance(store, SqliteStore)
    return await store._run(lambda conn: conn.execute(sql).fetchone()[0])


async def count(store: Store, table: str) -> int:
    """Rows in ``table``."""
    return int(await scalar(store, f"SELECT count(*) FROM {table}"))


# -- inbox ----------------------------------------------------------------------------
async def test_accept_commits_a_new_row_and_a_redelivery_is_a_duplicate_of_it(store: Store) -> None:
    first = await store.accept(inbound("m1"))
    again = await store.accept(inbound("m1", text="changed"))
    assert first.status is AcceptStatus.NEW
    assert again == Accepted(status=AcceptStatus.DUPLICATE, inbox_id=first.inbox_id)
    rows = await store.pending_inbox()
    assert [(r.inbox_id, r.text) for r in rows] == [(first.inbox_id, "Bonjour")]


async def test_same_external_id_on_another_channel_is_a_different_message(store: Store) -> None:
    a = await store.accept(inbound("42"))
    b = await store.accept(inbound("42", user="waha:221@c.us", channel=Channel.WAHA))
    assert a.is_new
    assert b.is_new
    assert a.inbox_id != b.inbox_id


async def test_hundred_concurrent_accepts_of_one_message_commit_exactly_one(store: Store) -> None:
    results: list[Accepted] = []

    async def deliver() -> None:
        results.append(await store.accept(inbound("same")))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(deliver)
    statuses = [r.status for r in results]
    assert statuses.count(AcceptStatus.NEW) == 1
    assert statuses.count(AcceptStatus.DUPLICATE) == 99
    assert len({r.inbox_id for r in results}) == 1
    assert await count(store, "inbox") == 1


async def test_concurrent_accepts_share_transactions_and_each_gets_its_own_row(
    store: Store,
) -> None:
    results: dict[str, Accepted] = {}

    async def deliver(n: int) -> None:
        results[f"m{n}"] = await store.accept(inbound(f"m{n}", user=f"telegram:{n % 5}"))

    async with trio.open_nursery() as nursery:
        for n in range(60):
            nursery.start_soon(deliver, n)
    assert all(r.is_new for r in results.values())
    assert len({r.inbox_id for r in results.values()}) == 60
    rows = await store.pending_inbox()
    assert {r.external_id: r.inbox_id for r in rows} == {k: v.inbox_id for k, v in results.items()}
    assert isinstance(store, SqliteStore | PostgresStore)
    stats = store.committer.statistics()
    assert stats.largest_batch > 1
    assert stats.batches < 60


async def test_pending_inbox_replays_unprocessed_rows_in_arrival_order(store: Store) -> None:
    ids = []
    for n, user in enumerate(
        ["telegram:1", "telegram:2", "telegram:1", "telegram:2", "telegram:1"]
    ):
        ids.append((await store.accept(inbound(f"m{n}", user=user))).inbox_id)
    await store.mark_processed(ids[0])
    pending = await store.pending_inbox()
    assert [r.inbox_id for r in pending] == ids[1:]
    assert ids == sorted(ids)
    mine = await store.pending_inbox(user_key="telegram:1")
    assert [r.external_id for r in mine] == ["m2", "m4"]
    assert [r.inbox_id for r in await store.pending_inbox(limit=2)] == ids[1:3]


async def test_inbox_row_keeps_every_field(store: Store) -> None:
    message = inbound("full", text="Quelle heure est la messe ? 🙏")
    accepted = await store.accept(message)
    (row,) = await store.pending_inbox()
    assert row.inbox_id == accepted.inbox_id
    assert (
        row.correlation_id,
        row.channel,
        row.user_key,
        row.chat_id,
        row.external_id,
        row.text,
        row.kind,
        row.display_name,
    ) == (
        message.correlation_id,
        message.channel,
        message.user_key,
        message.chat_id,
        message.external_id,
        message.text,
        message.kind,
        "Marie",
    )
    assert (
        await scalar(store, f"SELECT processed_at FROM inbox WHERE inbox_id = {row.inbox_id}")
        is None
    )
    assert abs(row.received_at - message.received_at) < timedelta(milliseconds=1)
    assert row.received_at.utcoffset() == timedelta(0)


# -- outbox -----------------------------------------------------------------------------
async def test_pending_outbox_lists_unsent_replies_in_creation_order(store: Store) -> None:
    ids = [await store.enqueue_reply(reply(f"r{n}", user=f"telegram:{n % 2}")) for n in range(4)]
    rows = await store.pending_outbox(Channel.TELEGRAM)
    assert [r.outbox_id for r in rows] == ids
    assert [r.text for r in rows] == ["r0", "r1", "r2", "r3"]
    assert await store.pending_outbox(Channel.WAHA) == []
    await store.mark_sent(ids[0])
    assert [r.outbox_id for r in await store.pending_outbox(Channel.TELEGRAM)] == ids[1:]


async def test_failed_send_waits_until_retry_and_holds_back_that_users_later_replies(
    store: Store,
) -> None:
    first = await store.enqueue_reply(reply("one", user="telegram:7"))
    second = await store.enqueue_reply(reply("two", user="telegram:7"))
    other = await store.enqueue_reply(reply("other", user="telegram:8"))
    retry_at = utcnow() + timedelta(minutes=5)
    await store.mark_send_failed(first, error="HTTP 502", retry_at=retry_at)
    assert [r.outbox_id for r in await store.pending_outbox(Channel.TELEGRAM)] == [other]
    later = await store.pending_outbox(Channel.TELEGRAM, now=retry_at + timedelta(seconds=1))
    assert [r.outbox_id for r in later] == [first, second, other]
    assert (later[0].attempts, later[0].last_error) == (1, "HTTP 502")


async def test_given_up_reply_is_never_retried(store: Store) -> None:
    dead = await store.enqueue_reply(reply("lost", user="telegram:9"))
    await store.mark_send_failed(dead, error="HTTP 400 chat not found", retry_at=None)
    after = await store.pending_outbox(Channel.TELEGRAM, now=utcnow() + timedelta(days=30))
    assert after == []


# -- users, identities, conversations -------------------------------------------------
async def test_resolve_user_creates_once_and_an_identity_can_be_linked(store: Store) -> None:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111", display_name="Marie")
    assert await store.resolve_user(Channel.TELEGRAM, "telegram:111") == uid
    await store.link_identity(uid, Channel.WAHA, "waha:33600000000@c.us")
    assert await store.resolve_user(Channel.WAHA, "waha:33600000000@c.us") == uid
    user = await store.user_for_key("waha:33600000000@c.us")
    assert user is not None
    assert (user.user_id, user.display_name, user.unreachable) == (uid, "Marie", False)
    assert await store.user_for_key("telegram:999") is None
    assert await store.resolve_user(Channel.TELEGRAM, "telegram:222") != uid


async def test_concurrent_first_contacts_resolve_to_one_user(store: Store) -> None:
    ids: list[int] = []

    async def contact() -> None:
        ids.append(await store.resolve_user(Channel.TELEGRAM, "telegram:555"))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(contact)
    assert len(set(ids)) == 1


async def test_unreachable_user_gets_nothing_sent_until_they_write_again(store: Store) -> None:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    await store.enqueue_reply(reply("hello"))
    await store.mark_unreachable("telegram:111")
    user = await store.user_for_key("telegram:111")
    assert user is not None
    assert user.unreachable
    assert await store.pending_outbox(Channel.TELEGRAM) == []
    assert await store.resolve_user(Channel.TELEGRAM, "telegram:111") == uid
    user = await store.user_for_key("telegram:111")
    assert user is not None
    assert not user.unreachable


async def test_conversation_keeps_service_type_and_recent_turns(store: Store) -> None:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    conv = await store.conversation_for(uid)
    assert (await store.conversation_for(uid)).conversation_id == conv.conversation_id
    assert conv.service_type is ServiceType.RENSEIGNEMENT
    assert not conv.handoff_open
    await record_history(
        store,
        conv.conversation_id,
        [f"t{n}" for n in range(5)],
        conversation_type=ServiceType.CATECHESE,
    )
    assert (await store.conversation_for(uid)).service_type is ServiceType.CATECHESE
    turns = await store.recent_turns(conv.conversation_id, limit=3)
    assert [(t.role, t.text) for t in turns] == [
        (Role.USER, "t2"),
        (Role.ASSISTANT, "t3"),
        (Role.USER, "t4"),
    ]


async def test_open_conversation_reads_what_the_separate_calls_read(store: Store) -> None:
    first = await store.accept(inbound("m1"))
    await store.accept(inbound("other", user="telegram:222"))
    second = await store.accept(inbound("m2"))
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:111", display_name="Marie", pending_limit=10, recent_limit=4
    )
    assert start.user_id == await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    assert start.conversation == await store.conversation_for(start.user_id)
    assert start.conversation.service_type is ServiceType.RENSEIGNEMENT
    assert start.handoff is None
    assert [r.inbox_id for r in start.pending] == [first.inbox_id, second.inbox_id]
    assert start.pending == tuple(await store.pending_inbox(user_key="telegram:111"))
    assert start.recent == ()
    user = await store.user_for_key("telegram:111")
    assert user is not None
    assert user.display_name == "Marie"


async def test_open_conversation_of_a_known_user_sees_their_history_and_open_handoff(
    store: Store,
) -> None:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111", display_name="Marie")
    conv = await store.conversation_for(uid)
    cid = conv.conversation_id
    await record_history(
        store, cid, [f"t{n}" for n in range(5)], conversation_type=ServiceType.CATECHESE
    )
    handoff = await store.open_handoff(
        conversation_id=cid, user_key="telegram:111", reason="priest", correlation_id="c9"
    )
    await store.mark_unreachable("telegram:111")
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:111", display_name="Marie D.", pending_limit=10, recent_limit=3
    )
    assert start.user_id == uid
    assert start.conversation.conversation_id == cid
    assert start.conversation.service_type is ServiceType.CATECHESE
    assert start.conversation.handoff_open
    assert start.handoff == await store.active_handoff(cid)
    assert start.handoff is not None
    assert start.handoff.handoff_id == handoff.handoff_id
    assert start.pending == ()
    assert start.recent == tuple(await store.recent_turns(cid, limit=3))
    assert [t.text for t in start.recent] == ["t2", "t3", "t4"]
    user = await store.user_for_key("telegram:111")
    assert user is not None
    assert (user.display_name, user.unreachable) == ("Marie D.", False)
    assert await count(store, "users") == 1
    assert await count(store, "conversations") == 1


async def test_concurrent_opens_of_a_new_user_resolve_to_one_user_and_conversation(
    store: Store,
) -> None:
    starts: list[int] = []

    async def start() -> None:
        opened = await store.open_conversation(
            Channel.TELEGRAM, "telegram:555", pending_limit=10, recent_limit=4
        )
        starts.append(opened.conversation.conversation_id)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(start)
    assert len(set(starts)) == 1
    assert await count(store, "users") == 1


# -- complete_turn: one handled row's writes, atomically -------------------------------------
async def _pending_row(store: Store, external_id: str = "m1") -> tuple[int, int]:
    """A new inbox row and the conversation of its user: (inbox_id, conversation_id)."""
    conv = await store.conversation_for(await store.resolve_user(Channel.TELEGRAM, "telegram:111"))
    accepted = await store.accept(inbound(external_id))
    return accepted.inbox_id, conv.conversation_id


def _turn(
    inbox_id: int, conversation_id: int, *replies: OutboundReply, text: str = "Bonjour"
) -> TurnRecord:
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        correlation_id=f"cid-{inbox_id}",
        service_type=ServiceType.CATECHESE,
        inbound_text=text,
        outbound_text=replies[0].text if replies else None,
        replies=replies,
        interaction=interaction(conversation_id, f"cid-{inbox_id}"),
        conversation_type=ServiceType.CATECHESE,
    )


async def _written(store: Store) -> tuple[int, int, int]:
    return (
        await count(store, "messages"),
        await count(store, "outbox"),
        await count(store, "interactions"),
    )


async def test_complete_turn_writes_the_whole_turn_and_marks_the_row_processed(
    store: Store,
) -> None:
    inbox_id, cid = await _pending_row(store)
    replies = [reply(t, inbox_id=inbox_id) for t in ("La messe est à 10h", "deux", "trois")]
    ids = await store.complete_turn(_turn(inbox_id, cid, *replies))
    assert len(ids) == 3
    assert list(ids) == sorted(ids)
    outbox = await store.pending_outbox(Channel.TELEGRAM)
    assert [(r.outbox_id, r.text, r.inbox_id) for r in outbox] == [
        (i, r.text, inbox_id) for i, r in zip(ids, replies, strict=True)
    ]
    assert await store.pending_inbox() == []
    assert await scalar(store, f"SELECT service_type FROM inbox WHERE inbox_id = {inbox_id}") == (
        "CATECHESE"
    )
    turns = await store.recent_turns(cid, limit=10)
    assert [(t.role, t.text) for t in turns] == [
        (Role.USER, "Bonjour"),
        (Role.ASSISTANT, "La messe est à 10h"),
    ]
    assert await count(store, "interactions") == 1
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    assert (await store.conversation_for(uid)).service_type is ServiceType.CATECHESE


async def test_completing_a_processed_row_again_writes_nothing_and_returns_nothing(
    store: Store,
) -> None:
    inbox_id, cid = await _pending_row(store)
    turn = _turn(inbox_id, cid, reply("La messe est à 10h", inbox_id=inbox_id))
    assert len(await store.complete_turn(turn)) == 1
    before = await _written(store)
    assert await store.complete_turn(turn) == ()
    assert await _written(store) == before == (2, 1, 1)
    # A row marked processed on its own (the router's busy path) is left alone too.
    other = (await store.accept(inbound("m2"))).inbox_id
    await store.mark_processed(other)
    assert await store.complete_turn(_turn(other, cid, reply("x", inbox_id=other))) == ()
    assert await _written(store) == before


async def test_a_turn_failing_midway_leaves_nothing_written_and_the_row_pending(
    store: Store,
) -> None:
    inbox_id, cid = await _pending_row(store)
    good = reply("La messe est à 10h", inbox_id=inbox_id)
    erased = reply("pour une ligne effacée", inbox_id=inbox_id + 1000)  # no such inbox row
    with pytest.raises(StoreError):
        await store.complete_turn(_turn(inbox_id, cid, good, erased))
    assert await _written(store) == (0, 0, 0)
    assert [r.inbox_id for r in await store.pending_inbox()] == [inbox_id]
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    assert (await store.conversation_for(uid)).service_type is ServiceType.RENSEIGNEMENT
    assert len(await store.complete_turn(_turn(inbox_id, cid, good))) == 1
    assert await store.pending_inbox() == []


async def test_concurrent_turns_commit_once_each_and_a_bad_one_fails_alone(store: Store) -> None:
    rows = [await _pending_row(store, f"m{n}") for n in range(12)]
    bad = rows[5][0]
    results: dict[int, list[tuple[int, ...] | str]] = {inbox_id: [] for inbox_id, _ in rows}

    async def complete(inbox_id: int, cid: int) -> None:
        target = inbox_id + 1000 if inbox_id == bad else inbox_id
        try:
            results[inbox_id].append(
                await store.complete_turn(
                    _turn(inbox_id, cid, reply(f"r{inbox_id}", inbox_id=target))
                )
            )
        except StoreError:
            results[inbox_id].append("failed")

    async with trio.open_nursery() as nursery:
        for inbox_id, cid in rows * 2:  # every row completed twice at once
            nursery.start_soon(complete, inbox_id, cid)
    assert results[bad] == ["failed", "failed"]
    for inbox_id, _ in rows:
        if inbox_id != bad:
            assert sorted(len(r) for r in results[inbox_id]) == [0, 1], results[inbox_id]
    texts = [r.text for r in await store.pending_outbox(Channel.TELEGRAM)]
    assert sorted(texts) == sorted(f"r{i}" for i, _ in rows if i != bad)
    assert [r.inbox_id for r in await store.pending_inbox()] == [bad]
    assert await _written(store) == (22, 11, 11)


async def test_turns_count_their_tokens_per_person_and_provider_per_day(store: Store) -> None:
    noon = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a fixed day: no midnight during the test
    mine = [await _pending_row(store, f"m{n}") for n in range(4)]
    other_user = await store.resolve_user(Channel.WAHA, "waha:221@c.us")
    other = (await store.conversation_for(other_user)).conversation_id
    gemini, offline, yesterday = [(await _pending_row(store, f"x{n}"))[0] for n in range(3)]
    cid = mine[0][1]

    def turn(inbox_id: int, conversation_id: int, **changes: Any) -> TurnRecord:
        made = _turn(inbox_id, conversation_id)
        assert made.interaction is not None
        return attrs.evolve(made, interaction=attrs.evolve(made.interaction, **changes))

    turns = [turn(i, c, created_at=noon) for i, c in mine]
    turns += [
        turn(gemini, other, created_at=noon, provider="gemini"),
        turn(offline, cid, created_at=noon, provider="offline", tokens_in=0, tokens_out=0),
        turn(yesterday, cid, created_at=noon - timedelta(days=1)),
    ]
    # Concurrent turns (batched together), each completed twice (written once).
    async with trio.open_nursery() as nursery:
        for record in turns * 2:
            nursery.start_soon(store.complete_turn, record)

    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    day = await store.usage_on(noon.date())
    assert day.users == {uid: 4 * 160, other_user: 160}
    assert day.providers == {"anthropic": 4 * 160, "gemini": 160}
    before = await store.usage_on(noon.date() - timedelta(days=1))
    assert (before.users, before.providers) == ({uid: 160}, {"anthropic": 160})
    assert (await store.usage_on(noon.date() + timedelta(days=1))).users == {}


async def test_a_turn_without_a_conversation_only_writes_replies_and_marks_the_row(
    store: Store,
) -> None:
    accepted = await store.accept(inbound("m1"))
    busy = reply("Un instant", inbox_id=accepted.inbox_id)
    turn = TurnRecord(
        inbox_id=accepted.inbox_id,
        conversation_id=None,
        correlation_id="cid-m1",
        service_type=None,
        replies=(busy,),
    )
    (outbox_id,) = await store.complete_turn(turn)
    assert [r.outbox_id for r in await store.pending_outbox(Channel.TELEGRAM)] == [outbox_id]
    assert await store.pending_inbox() == []
    assert (
        await scalar(store, f"SELECT service_type FROM inbox WHERE inbox_id = {accepted.inbox_id}")
        is None
    )


def test_a_turn_record_that_records_messages_needs_a_conversation_and_a_service_type() -> None:
    with pytest.raises(ValueError, match="conversation_id is None"):
        TurnRecord(
            inbox_id=1,
            conversation_id=None,
            correlation_id="c",
            service_type=None,
            inbound_text="x",
        )
    with pytest.raises(ValueError, match="needs a service_type"):
        TurnRecord(
            inbox_id=1, conversation_id=2, correlation_id="c", service_type=None, outbound_text="x"
        )


# -- cursors and handoffs -----------------------------------------------------------------
async def test_cursor_is_stored_and_overwritten(store: Store) -> None:
    assert await store.get_cursor("telegram.offset") is None
    await store.set_cursor("telegram.offset", "100")
    await store.set_cursor("telegram.offset", "101")
    assert await store.get_cursor("telegram.offset") == "101"


async def test_handoff_opens_once_then_is_closed(store: Store) -> None:
    conv = await store.conversation_for(await store.resolve_user(Channel.TELEGRAM, "telegram:111"))
    cid = conv.conversation_id
    opened = await store.open_handoff(
        conversation_id=cid,
        user_key="telegram:111",
        reason="asked for a priest",
        correlation_id="c1",
    )
    again = await store.open_handoff(
        conversation_id=cid, user_key="telegram:111", reason="again", correlation_id="c2"
    )
    assert again.handoff_id == opened.handoff_id
    assert again.reason == "asked for a priest"
    assert (await store.conversation_for(conv.user_id)).handoff_open
    assert [
        h.handoff_id for h in await store.handoffs_opened_before(utcnow() + timedelta(seconds=5))
    ] == [opened.handoff_id]
    assert await store.handoffs_opened_before(utcnow() - timedelta(hours=1)) == []
    active = await store.active_handoff(cid)
    assert active is not None
    assert (active.handoff_id, active.state) == (opened.handoff_id, HandoffState.OPEN)
    await store.close_handoff(opened.handoff_id, closed_by="pere.jean")
    assert await store.active_handoff(cid) is None
    assert not (await store.conversation_for(conv.user_id)).handoff_open
    reopened = await store.open_handoff(
        conversation_id=cid, user_key="telegram:111", reason="new request", correlation_id="c3"
    )
    assert reopened.handoff_id != opened.handoff_id
    assert reopened.state is HandoffState.OPEN


async def test_an_urgent_request_makes_the_open_handoff_urgent_once(store: Store) -> None:
    conv = await store.conversation_for(await store.resolve_user(Channel.TELEGRAM, "telegram:111"))
    cid = conv.conversation_id

    async def open_(correlation_id: str, *, urgent: bool) -> HandoffRow:
        return await store.open_handoff(
            conversation_id=cid,
            user_key="telegram:111",
            reason="command",
            correlation_id=correlation_id,
            urgent=urgent,
        )

    opened = await open_("c1", urgent=False)
    assert (opened.urgent, opened.correlation_id) == (False, "c1")
    made = await open_("c2", urgent=True)
    assert (made.handoff_id, made.urgent, made.correlation_id) == (opened.handoff_id, True, "c2")
    assert made.reason == "command"
    again = await open_("c3", urgent=True)
    assert (again.urgent, again.correlation_id) == (True, "c2")  # urgent already: left be
    calm = await open_("c4", urgent=False)
    assert (calm.urgent, calm.correlation_id) == (True, "c2")  # never made less urgent
    active = await store.active_handoff(cid)
    assert active is not None
    assert active.urgent
    (listed,) = await store.handoffs_opened_before(utcnow() + timedelta(seconds=5))
    assert listed.urgent
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:111", pending_limit=1, recent_limit=1
    )
    assert start.handoff is not None
    assert start.handoff.urgent
    await store.close_handoff(opened.handoff_id, closed_by="pere.jean")
    fresh = await open_("c5", urgent=True)
    assert (fresh.handoff_id != opened.handoff_id, fresh.urgent) == (True, True)


# -- data protection ------------------------------------------------------------------------
async def _conversation_with_history(store: Store) -> tuple[int, int]:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111", display_name="Marie")
    conv = await store.conversation_for(uid)
    accepted = await store.accept(inbound("m1"))
    (sent,) = await store.complete_turn(
        TurnRecord(
            inbox_id=accepted.inbox_id,
            conversation_id=conv.conversation_id,
            correlation_id="c1",
            service_type=ServiceType.RENSEIGNEMENT,
            inbound_text="Bonjour",
            replies=(reply("La messe est à 10h", inbox_id=accepted.inbox_id),),
            interaction=interaction(
                conv.conversation_id, "c1", service_type=ServiceType.RENSEIGNEMENT
            ),
        )
    )
    await store.mark_sent(sent)
    return uid, conv.conversation_id


async def test_erasing_old_texts_keeps_metadata_and_recent_texts(store: Store) -> None:
    _, conversation_id = await _conversation_with_history(store)
    pending = await store.accept(inbound("m2", text="pas encore traité"))
    assert await store.erase_texts_before(utcnow() - timedelta(days=1)) == 0
    assert await store.erase_texts_before(utcnow() + timedelta(seconds=5)) == 3
    assert await store.recent_turns(conversation_id, limit=10) == []
    assert await count(store, "interactions") == 1
    assert await count(store, "messages") == 1
    (still,) = await store.pending_inbox()
    assert (still.inbox_id, still.text) == (pending.inbox_id, "pas encore traité")
    assert await store.erase_texts_before(utcnow() + timedelta(seconds=5)) == 0


async def test_forget_user_erases_their_data_but_keeps_interaction_metadata(store: Store) -> None:
    uid, _ = await _conversation_with_history(store)
    other = await store.resolve_user(Channel.TELEGRAM, "telegram:222")
    await store.accept(inbound("m9", user="telegram:222"))
    assert (await store.forget_user(uid)).rows > 0
    assert await store.user_for_key("telegram:111") is None
    assert [r.user_key for r in await store.pending_inbox()] == ["telegram:222"]
    assert await count(store, "messages") == 0
    assert await count(store, "outbox") == 0
    assert await count(store, "interactions") == 1
    assert await store.resolve_user(Channel.TELEGRAM, "telegram:222") == other
    assert await store.resolve_user(Channel.TELEGRAM, "telegram:111") != uid


async def test_forget_user_erases_the_staff_notices_that_quote_them(store: Store) -> None:
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    accepted = await store.accept(inbound("m1"))
    (pending,) = await store.pending_inbox()
    staff = OutboundReply(
        correlation_id=pending.correlation_id,
        channel=Channel.TELEGRAM,
        user_key="telegram:-1001234",
        chat_id="-1001234",
        text="URGENT: Dernier message : Bonjour",
    )
    other = attrs.evolve(staff, correlation_id="someone-else", text="about someone else")
    await store.complete_turn(
        TurnRecord(
            inbox_id=accepted.inbox_id,
            conversation_id=None,
            correlation_id=pending.correlation_id,
            service_type=None,
            replies=(staff, other),
        )
    )
    await store.forget_user(uid)
    rows = await store.pending_outbox(Channel.TELEGRAM)
    assert [r.text for r in rows] == ["about someone else"]


async def test_forget_helper_accepts_a_channel_identity_or_an_internal_id(
    settings: StoreSettings,
) -> None:
    async with open_store(settings) as store:
        first = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
        second = await store.resolve_user(Channel.WAHA, "waha:33600000000@c.us")
        by_key = await forget_user(store, "telegram:111")
        by_id = await forget_user(store, str(second))
        assert (by_key.user_id, by_id.user_id) == (first, second)
        with pytest.raises(UnknownUser, match="telegram:111"):
            await forget_user(store, "telegram:111")
        with pytest.raises(UnknownUser, match="999999"):
            await forget_user(store, 999999)
        with pytest.raises(ValueError, match="--user 'marie'"):
            await forget_user(store, "marie")


async def test_a_forgotten_message_redelivered_is_erased_not_stored(store: Store) -> None:
    """A tombstone refuses a replay of an erased message; the user may still write anew."""
    await store.accept(inbound("false_221771234567@c.us_AB12", channel=Channel.WAHA))
    await store.accept(inbound("m2", user="telegram:222"))
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    await store.forget_user(uid)
    replayed = await store.accept(inbound("false_221771234567@c.us_AB12", channel=Channel.WAHA))
    assert replayed == Accepted(status=AcceptStatus.ERASED, inbox_id=0)
    assert [r.external_id for r in await store.pending_inbox()] == ["m2"]
    # Nothing of the erased message is kept in clear: one keyed hash, no id, no number.
    assert await count(store, "tombstones") == 1
    digest = await scalar(store, "SELECT digest FROM tombstones")
    key = await store.erasure_key()
    assert digest == erasure_digest(key, "waha", "false_221771234567@c.us_AB12")
    assert "221771234567" not in digest
    fresh = await store.accept(inbound("m3"))
    assert fresh.status is AcceptStatus.NEW


async def test_a_batch_mixing_erased_and_new_messages_keeps_their_order(store: Store) -> None:
    await store.accept(inbound("old"))
    await store.forget_user(await store.resolve_user(Channel.TELEGRAM, "telegram:111"))
    assert isinstance(store, PostgresStore | SqliteStore)
    results = await store._accept_batch([inbound(i) for i in ("new1", "old", "new2", "new1")])
    assert [r.status for r in results] == [
        AcceptStatus.NEW,
        AcceptStatus.ERASED,
        AcceptStatus.NEW,
        AcceptStatus.DUPLICATE,
    ]


async def test_forgetting_leaves_a_notice_per_identity_as_a_keyed_hash(store: Store) -> None:
    uid = await store.resolve_user(Channel.WAHA, "waha:221771234567@c.us")
    await store.link_identity(uid, Channel.WAHA, "waha:123456789012345@lid")
    before = await store.erasures_after(0)
    await store.forget_user(uid)
    notices = await store.erasures_after(before[-1].erasure_id if before else 0)
    key = await store.erasure_key()
    assert sorted(n.user_digest for n in notices) == sorted(
        erasure_digest(key, k)
        # The person's own key too: a person with several identities is known by it.
        for k in ("waha:221771234567@c.us", "waha:123456789012345@lid", person_key(uid))
    )
    assert await store.erasures_after(notices[-1].erasure_id) == []


async def test_the_erasure_key_is_generated_once_and_kept(settings: StoreSettings) -> None:
    async with open_store(settings) as store:
        key = await store.erasure_key()
    async with open_store(settings) as again:
        assert await again.erasure_key() == key
    assert len(key) == 32


# -- lifecycle --------------------------------------------------------------------------------
async def test_migrations_are_idempotent(settings: StoreSettings) -> None:
    assert await migrate(settings) == []
    assert await migrate(settings) == []


async def test_ping_reports_a_latency(store: Store) -> None:
    assert await store.ping() > 0


async def test_a_closed_store_refuses_work_with_store_unavailable(settings: StoreSettings) -> None:
    async with open_store(settings) as store:
        pass
    with pytest.raises(StoreUnavailable):
        await store.accept(inbound("late"))
    with pytest.raises(StoreUnavailable):
        await store.ping()


_CRASH_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import trio
    from concierge.protocol import Channel, utcnow
    from concierge.settings import StoreSettings
    from concierge.protocol import InboundMessage, OutboundReply
    from concierge.store import open_store

    args = json.loads(sys.argv[1])
    settings = StoreSettings(
        data_dir=Path(args["data_dir"]), database_url=args["database_url"], redis_url=None,
        pool_size=2, command_timeout_s=5, statement_timeout_s=5, redis_timeout_s=0.5,
        session_ttl_s=60, retention_days=90)

    async def main():
        async with open_store(settings) as store:
            accepted = await store.accept(InboundMessage(
                correlation_id="crash", channel=Channel.TELEGRAM, user_key="telegram:1",
                chat_id="1", external_id="crash-1", text="avant le crash", received_at=utcnow()))
            print("@accepted", accepted.inbox_id, flush=True)
            outbox_id = await store.enqueue_reply(OutboundReply(
                correlation_id="crash", channel=Channel.TELEGRAM, user_key="telegram:1",
                chat_id="1", text="réponse", inbox_id=accepted.inbox_id))
            print("@enqueued", outbox_id, flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


@pytest.mark.slow
async def test_rows_accepted_before_a_sigkill_are_pending_after_restart(
    settings: StoreSettings,
) -> None:
    args = json.dumps({"data_dir": str(settings.data_dir), "database_url": settings.database_url})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _CRASH_SCRIPT, args], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        output = b""
        with trio.fail_after(60):
            while re.search(rb"@enqueued \d+\n", output) is None:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    pytest.fail(f"the writer exited early after {output!r}")
                output += chunk
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
    assert proc.returncode == -signal.SIGKILL
    marks = [line.split() for line in output.decode().splitlines() if line.startswith("@")]
    lines = {word.lstrip("@"): int(number) for word, number in marks}
    async with open_store(settings) as store:
        (row,) = await store.pending_inbox()
        (out,) = await store.pending_outbox(Channel.TELEGRAM)
        sent_at = await scalar(
            store, f"SELECT sent_at FROM outbox WHERE outbox_id = {out.outbox_id}"
        )
    assert (row.inbox_id, row.text) == (lines["accepted"], "avant le crash")
    assert (out.outbox_id, out.inbox_id, sent_at) == (lines["enqueued"], row.inbox_id, None)


@hypothesis_settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=40))
async def test_concurrent_deliveries_with_repeats_commit_each_message_once(
    store: Store, deliveries: list[int]
) -> None:
    run = secrets.token_hex(4)  # examples share the store: keep their messages apart
    results: list[tuple[int, Accepted]] = []

    async def deliver(n: int) -> None:
        results.append((n, await store.accept(inbound(f"{run}-{n}"))))

    async with trio.open_nursery() as nursery:
        for n in deliveries:
            nursery.start_soon(deliver, n)
    new = [n for n, a in results if a.is_new]
    assert sorted(new) == sorted(set(deliveries))
    ids = {n: {a.inbox_id for m, a in results if m == n} for n in set(deliveries)}
    assert all(len(one) == 1 for one in ids.values())
    assert len({next(iter(one)) for one in ids.values()}) == len(ids)
