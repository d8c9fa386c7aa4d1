"""The staff desk's part of the ``Store`` contract, run unchanged against SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from concierge.protocol import (
    AuditEntry,
    Channel,
    Direction,
    HandoffState,
    InboundKind,
    InboundMessage,
    OutboundReply,
    ServiceType,
    StaffReply,
    TurnRecord,
    utcnow,
)
from concierge.store import Store
from concierge.store.postgres import PostgresStore
from concierge.store.sqlite import SqliteStore
from tests.store.records import record_history, reply
from tests.store.test_contract import count, inbound

pytestmark = pytest.mark.anyio

STAFF_CHAT = "-1001234567890"


async def execute(store: Store, sql: str) -> None:
    """A write behind the interface (for states no caller sets yet, such as ``urgent``)."""
    if isinstance(store, PostgresStore):
        await store.fetchval(sql)
        return
    assert isinstance(store, SqliteStore)
    await store._write(lambda conn: conn.execute(sql))


async def handoff_of(store: Store, user: str, *, name: str = "Marie") -> tuple[int, int]:
    """(handoff id, conversation id) of a new handoff for ``user``."""
    uid = await store.resolve_user(Channel.TELEGRAM, user, display_name=name)
    conv = await store.conversation_for(uid)
    opened = await store.open_handoff(
        conversation_id=conv.conversation_id,
        user_key=user,
        reason="command",
        correlation_id=f"open-{user}",
    )
    return opened.handoff_id, conv.conversation_id


def staff_message(text: str, handoff_id: int) -> OutboundReply:
    return OutboundReply(
        correlation_id=f"staff-{handoff_id}",
        channel=Channel.TELEGRAM,
        user_key=f"telegram:{STAFF_CHAT}",
        chat_id=STAFF_CHAT,
        text=text,
        handoff_id=handoff_id,
    )


def staff_inbound(external_id: str, *, reply_to: str | None = None) -> InboundMessage:
    return InboundMessage(
        correlation_id=f"cid-{external_id}",
        channel=Channel.TELEGRAM,
        user_key="staff:telegram:42",
        chat_id=STAFF_CHAT,
        external_id=external_id,
        text="/r 1 Bonjour",
        kind=InboundKind.STAFF,
        received_at=utcnow(),
        display_name="Bob",
        reply_to=reply_to,
    )


async def test_a_staff_chat_message_is_found_by_the_ids_it_was_sent_as(store: Store) -> None:
    handoff_id, conversation_id = await handoff_of(store, "telegram:111")
    accepted = await store.accept(inbound("m1"))
    notice_id, answer_id = await store.complete_turn(
        TurnRecord(
            inbox_id=accepted.inbox_id,
            conversation_id=conversation_id,
            correlation_id="c1",
            service_type=ServiceType.CONTACT_HUMAIN,
            inbound_text="Je voudrais parler au curé",
            replies=(staff_message("Demande n°1", handoff_id), reply("Je transmets")),
        )
    )
    forwarded = await store.enqueue_reply(staff_message("n°1 · Marie : encore là ?", handoff_id))
    await store.mark_sent(notice_id, message_ids=("41", "42"))
    await store.mark_sent(notice_id, message_ids=("42",))  # a resend after a crash
    await store.mark_sent(forwarded, message_ids=("57",))
    await store.mark_sent(answer_id, message_ids=("58",))  # to the user: no handoff to find
    found = [
        await store.handoff_for_staff_message(Channel.TELEGRAM, STAFF_CHAT, message_id)
        for message_id in ("41", "42", "57", "58", "99")
    ]
    assert found == [handoff_id, handoff_id, handoff_id, None, None]
    assert await store.handoff_for_staff_message(Channel.WAHA, STAFF_CHAT, "41") is None
    assert (await store.pending_outbox(Channel.TELEGRAM)) == []


async def test_an_inbox_row_keeps_what_it_replies_to(store: Store) -> None:
    await store.accept(staff_inbound("s1", reply_to="41"))
    user_row = await store.accept(inbound("m1"))
    (staff_row,) = await store.pending_inbox(user_key="staff:telegram:42")
    assert (staff_row.kind, staff_row.reply_to) == (InboundKind.STAFF, "41")
    start = await store.open_conversation(
        Channel.TELEGRAM, "telegram:111", pending_limit=10, recent_limit=10
    )
    assert [(p.inbox_id, p.reply_to) for p in start.pending] == [(user_row.inbox_id, None)]


async def test_handoffs_list_active_urgent_first_and_closed_newest_first(store: Store) -> None:
    first, conversation = await handoff_of(store, "telegram:1", name="Anne")
    second, _ = await handoff_of(store, "telegram:2", name="Paul")
    third, _ = await handoff_of(store, "telegram:3", name="Luc")
    fourth, _ = await handoff_of(store, "telegram:4", name="Jean")
    await record_history(store, conversation, ["Bonjour", "Je transmets", "Vous êtes là ?"])
    await execute(store, f"UPDATE handoffs SET urgent = (1 = 1) WHERE handoff_id = {third}")
    assert await store.close_handoff(second, closed_by="alice")
    assert not await store.close_handoff(second, closed_by="bob")
    assert await store.close_handoff(fourth, closed_by="timeout")

    active = await store.list_handoffs(active=True, limit=10)
    assert [(h.handoff_id, h.urgent) for h in active] == [(third, True), (first, False)]
    anne = active[1]
    assert (anne.display_name, anne.user_key, anne.state) == (
        "Anne",
        "telegram:1",
        HandoffState.OPEN,
    )
    assert anne.last_message_id is not None
    assert anne.last_message_at is not None
    assert active[0].last_message_id is None

    closed = await store.list_handoffs(active=False, limit=1)
    assert [(h.handoff_id, h.closed_by) for h in closed] == [(fourth, "timeout")]
    older = await store.list_handoffs(active=False, limit=5, before=fourth)
    assert [h.handoff_id for h in older] == [second]
    view = await store.handoff_view(second)
    assert view is not None
    assert view.state is HandoffState.CLOSED
    assert not view.active
    assert await store.handoff_view(10_000) is None


async def test_a_claim_assigns_once_and_only_a_take_over_reassigns(store: Store) -> None:
    handoff_id, conversation_id = await handoff_of(store, "telegram:111")
    await store.claim_handoff(handoff_id, by="alice", take_over=False)
    await store.claim_handoff(handoff_id, by="bob", take_over=False)
    view = await store.handoff_view(handoff_id)
    assert view is not None
    assert (view.state, view.claimed_by) == (HandoffState.ASSIGNED, "alice")
    assert view.claimed_at is not None
    assert view.active
    active = await store.active_handoff(conversation_id)
    assert active is not None
    assert active.state is HandoffState.ASSIGNED
    await store.claim_handoff(handoff_id, by="bob", take_over=True)
    assert (await store.handoff_view(handoff_id)).claimed_by == "bob"  # type: ignore[union-attr]
    assert await store.close_handoff(handoff_id, closed_by="bob")
    await store.claim_handoff(handoff_id, by="carol", take_over=True)
    closed = await store.handoff_view(handoff_id)
    assert closed is not None
    assert (closed.state, closed.claimed_by) == (HandoffState.CLOSED, "bob")


async def test_a_staff_reply_is_written_at_once_and_a_replay_writes_nothing(store: Store) -> None:
    handoff_id, conversation_id = await handoff_of(store, "telegram:111")
    staff_row = await store.accept(staff_inbound("s1"))
    answer = StaffReply(
        handoff_id=handoff_id,
        author="Bob (telegram:42)",
        text="Bonjour, ici le père Jean.",
        reply=reply("Message de la paroisse :\nBonjour, ici le père Jean."),
        inbox_id=staff_row.inbox_id,
    )
    outbox_id = await store.record_staff_reply(answer)
    assert outbox_id is not None
    assert await store.record_staff_reply(answer) is None  # the staff message was settled
    assert await count(store, "outbox") == 1
    assert await store.pending_inbox(user_key="staff:telegram:42") == []
    (queued,) = await store.pending_outbox(Channel.TELEGRAM)
    assert (queued.outbox_id, queued.chat_id) == (outbox_id, "111")
    (message,) = await store.history(conversation_id, limit=10)
    assert (message.direction, message.author, message.text) == (
        Direction.OUTBOUND,
        "Bob (telegram:42)",
        "Bonjour, ici le père Jean.",
    )
    view = await store.handoff_view(handoff_id)
    assert view is not None
    assert view.claimed_by == "Bob (telegram:42)"

    from_api = StaffReply(
        handoff_id=handoff_id, author="alice", text="Encore un mot", reply=reply("x")
    )
    assert await store.record_staff_reply(from_api) is not None
    assert (await store.handoff_view(handoff_id)).claimed_by == "Bob (telegram:42)"  # type: ignore[union-attr]
    await store.close_handoff(handoff_id, closed_by="alice")
    assert await store.record_staff_reply(from_api) is None
    assert await count(store, "outbox") == 2


async def test_history_pages_back_and_reads_oldest_first(store: Store) -> None:
    _handoff_id, conversation_id = await handoff_of(store, "telegram:111")
    await record_history(store, conversation_id, [f"t{n}" for n in range(6)])
    newest = await store.history(conversation_id, limit=4)
    assert [m.text for m in newest] == ["t2", "t3", "t4", "t5"]
    assert [m.direction for m in newest[:2]] == [Direction.INBOUND, Direction.OUTBOUND]
    older = await store.history(conversation_id, limit=4, before=newest[0].message_id)
    assert [m.text for m in older] == ["t0", "t1"]
    assert await store.history(conversation_id, limit=4, before=older[0].message_id) == []


async def test_a_user_view_lists_identities_conversation_and_active_handoff(store: Store) -> None:
    handoff_id, conversation_id = await handoff_of(store, "telegram:111")
    uid = await store.resolve_user(Channel.TELEGRAM, "telegram:111")
    await store.link_identity(uid, Channel.WAHA, "waha:33612345678@c.us")
    view = await store.user_view(uid)
    assert view is not None
    assert [i.user_key for i in view.identities] == ["telegram:111", "waha:33612345678@c.us"]
    assert (view.display_name, view.conversation_id, view.active_handoff_id) == (
        "Marie",
        conversation_id,
        handoff_id,
    )
    assert view.forgotten_at is None
    await store.close_handoff(handoff_id, closed_by="alice")
    assert (await store.user_view(uid)).active_handoff_id is None  # type: ignore[union-attr]
    assert await store.user_view(uid + 1000) is None


async def test_audit_entries_come_newest_first_a_page_at_a_time(store: Store) -> None:
    at = utcnow() - timedelta(minutes=5)
    ids = [
        await store.record_audit(
            AuditEntry(
                actor="alice",
                role="staff",
                action=action,
                target="handoff:7",
                via="api",
                detail="12 characters" if action == "handoff.reply" else "",
                correlation_id=f"c{n}",
                at=at + timedelta(seconds=n),
            )
        )
        for n, action in enumerate(("handoff.claim", "handoff.reply", "handoff.close"))
    ]
    page = await store.audit_entries(limit=2)
    assert [r.action for r in page] == ["handoff.close", "handoff.reply"]
    assert (page[1].detail, page[1].correlation_id, page[1].via) == ("12 characters", "c1", "api")
    assert page[1].at == at + timedelta(seconds=1)
    rest = await store.audit_entries(limit=2, before=page[-1].audit_id)
    assert [r.audit_id for r in rest] == [ids[0]]
