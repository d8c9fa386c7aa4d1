"""Merging persons while their conversations run: re-key, wait for the old actors, merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from concierge.domain import LivePersons, MergeAbandoned, People
from concierge.protocol import Channel
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_a_merge_waits_for_the_other_sides_actor_then_merges(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        tg = await store.resolve_user(Channel.TELEGRAM, "telegram:1")
        wa = await store.resolve_user(Channel.WAHA, "waha:2@c.us")
        people = People()
        busy = people.enter("telegram:1")  # mid-turn: not idle, so it ends when it is done
        persons = LivePersons(store=store, people=people, wait_s=30)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(persons.merge, wa, tg)
            await eventually(lambda: busy.retiring, "the other side's actor retired")
            assert people.person_of("waha:2@c.us") == f"person:{tg}"  # re-keyed already
            before = await store.user_for_key("waha:2@c.us")
            assert before is not None
            assert before.user_id == wa  # not merged while it runs
            people.leave(busy)  # the turn in flight is written: now the merge
        row = await store.user_for_key("waha:2@c.us")
        assert row is not None
        assert row.user_id == tg


async def test_a_merge_is_abandoned_when_the_other_side_does_not_end(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        tg = await store.resolve_user(Channel.TELEGRAM, "telegram:1")
        wa = await store.resolve_user(Channel.WAHA, "waha:2@c.us")
        people = People()
        people.enter("telegram:1")
        persons = LivePersons(store=store, people=people, wait_s=0.05)
        with pytest.raises(MergeAbandoned):
            await persons.merge(tg, wa, own_key="waha:2@c.us")
        assert people.person_of("telegram:1") == "telegram:1"  # the old keys are back
        assert people.person_of("waha:2@c.us") == "waha:2@c.us"
        row = await store.user_for_key("waha:2@c.us")
        assert row is not None
        assert row.user_id == wa
