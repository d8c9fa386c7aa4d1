"""The persons' part of the ``Store`` contract (link codes, merge, unlink), on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from concierge.protocol import Channel, ServiceType, TurnRecord, utcnow
from concierge.store import Store
from tests.store.test_contract import count, inbound

pytestmark = pytest.mark.anyio

TG = "telegram:111"
WA = "waha:221770000001@c.us"
LID = "waha:123456789012345@lid"


async def say(store: Store, conversation_id: int, user: str, text: str) -> None:
    """One message of ``user`` recorded in the conversation, as a turn writes it."""
    accepted = await store.accept(inbound(text, user=user, text=text))
    await store.complete_turn(
        TurnRecord(
            inbox_id=accepted.inbox_id,
            conversation_id=conversation_id,
            correlation_id=f"cid-{text}",
            service_type=ServiceType.CATECHESE,
            inbound_text=text,
        )
    )


async def test_a_code_is_live_until_it_expires_and_serves_once(store: Store) -> None:
    now = utcnow()
    await store.resolve_user(Channel.TELEGRAM, TG)
    await store.issue_link_code(
        channel=Channel.TELEGRAM,
        user_key=TG,
        chat_id="111",
        digest="d1",
        expires_at=now + timedelta(minutes=5),
    )
    # A second code replaces the first.
    await store.issue_link_code(
        channel=Channel.TELEGRAM,
        user_key=TG,
        chat_id="111",
        digest="d2",
        expires_at=now + timedelta(minutes=5),
    )
    (code,) = await store.live_link_codes(now)
    assert (code.digest, code.user_key, code.chat_id) == ("d2", TG, "111")
    assert await store.live_link_codes(now + timedelta(minutes=6)) == []
    assert await store.claim_link_code(code.code_id, now=now + timedelta(minutes=6)) is None
    claimed = await store.claim_link_code(code.code_id, now=now)
    assert claimed == code
    assert await store.claim_link_code(code.code_id, now=now) is None
    assert await store.live_link_codes(now) == []


async def test_merging_keeps_the_older_person_with_both_histories_in_time_order(
    store: Store,
) -> None:
    tg = await store.resolve_user(Channel.TELEGRAM, TG)
    wa = await store.resolve_user(Channel.WAHA, WA)
    await store.link_identity(wa, Channel.WAHA, LID)
    tg_conv = (await store.conversation_for(tg)).conversation_id
    wa_conv = (await store.conversation_for(wa)).conversation_id
    await say(store, tg_conv, TG, "t1")
    await say(store, wa_conv, WA, "w1")
    await say(store, tg_conv, TG, "t2")
    handoff = await store.open_handoff(
        conversation_id=wa_conv, user_key=WA, reason="command", correlation_id="h"
    )

    linked = await store.merge_persons(wa, tg)

    assert (linked.user_id, linked.absorbed_user_id) == (tg, wa)
    assert {i.user_key for i in linked.identities} == {TG, WA, LID}
    merged = await store.conversation_for(tg)
    assert merged.conversation_id == tg_conv
    assert merged.handoff_open
    active = await store.active_handoff(tg_conv)
    assert active is not None
    assert active.handoff_id == handoff.handoff_id
    texts = [t.text for t in await store.recent_turns(tg_conv, limit=20)]
    assert texts == ["t1", "w1", "t2"]
    assert await count(store, "users") == 1
    assert {i.user_key for i in await store.linked_identities()} == {TG, WA, LID}
    # Merging again is a no-op.
    again = await store.merge_persons(tg, tg)
    assert again.absorbed_user_id is None


async def test_when_both_had_a_handoff_open_the_merged_person_has_one(store: Store) -> None:
    tg = await store.resolve_user(Channel.TELEGRAM, TG)
    wa = await store.resolve_user(Channel.WAHA, WA)
    for uid, key in ((tg, TG), (wa, WA)):
        conv = await store.conversation_for(uid)
        await store.open_handoff(
            conversation_id=conv.conversation_id, user_key=key, reason="command", correlation_id=key
        )
    linked = await store.merge_persons(tg, wa)
    conv = await store.conversation_for(linked.user_id)
    assert conv.handoff_open
    assert await store.active_handoff(conv.conversation_id) is not None
    assert await count(store, "handoffs") == 2
    assert len(await store.handoffs_opened_before(utcnow() + timedelta(seconds=1))) == 1


async def test_unlinking_takes_the_channel_with_its_aliases_to_a_new_person(store: Store) -> None:
    tg = await store.resolve_user(Channel.TELEGRAM, TG)
    wa = await store.resolve_user(Channel.WAHA, WA)
    await store.link_identity(wa, Channel.WAHA, LID)
    await store.merge_persons(tg, wa)
    assert await store.unlink_identity("telegram:999") is None

    unlinked = await store.unlink_identity(LID)

    assert unlinked is not None
    assert unlinked.user_id == tg
    assert {i.user_key for i in unlinked.moved} == {WA, LID}
    assert [i.user_key for i in unlinked.remaining] == [TG]
    assert [i.user_key for i in await store.person_identities(unlinked.new_user_id)] == [WA, LID]
    assert await store.linked_identities() == []
    # Nothing left to leave: a person on one channel only.
    assert await store.unlink_identity(TG) is None


async def test_wrong_codes_are_counted_per_identity_within_the_window(store: Store) -> None:
    now = utcnow()
    for minutes in (90, 30, 10):
        await store.record_link_failure(TG, now - timedelta(minutes=minutes))
    await store.record_link_failure(WA, now)
    assert await store.link_failures_since(TG, now - timedelta(hours=1)) == 2
    assert await store.link_failures_since(WA, now - timedelta(hours=1)) == 1
