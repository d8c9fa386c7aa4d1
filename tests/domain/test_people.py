"""Who is who across channels in the process: the identity map and the actors' succession."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from concierge.domain import People
from concierge.protocol import PersonIdentity

pytestmark = pytest.mark.anyio

TG = PersonIdentity(user_id=1, channel="telegram", user_key="telegram:1")
WA = PersonIdentity(user_id=1, channel="waha", user_key="waha:2@c.us")
LID = PersonIdentity(user_id=1, channel="waha", user_key="waha:3@lid")


def test_a_person_on_one_channel_is_known_by_the_identity_and_on_several_by_the_person() -> None:
    people = People()
    people.load([WA, LID])
    assert people.person_of("waha:2@c.us") == "waha:2@c.us"
    assert people.identities("waha:2@c.us") == ("waha:2@c.us",)

    old = people.regroup(1, [TG, WA, LID])

    assert old == ["telegram:1", "waha:2@c.us", "waha:3@lid"]
    assert {people.person_of(k) for k in ("telegram:1", "waha:2@c.us", "waha:3@lid")} == {
        "person:1"
    }
    assert people.identities("person:1") == ("telegram:1", "waha:2@c.us", "waha:3@lid")
    # Split again: each channel on its own, known by its identities.
    assert people.regroup(1, [TG]) == ["person:1"]
    people.regroup(2, [WA, LID])
    assert people.person_of("waha:3@lid") == "waha:3@lid"
    assert people.linked == 0


async def test_a_retired_idle_actor_wakes_and_its_successor_waits_for_it_to_end() -> None:
    people = People()
    tenure = people.enter("telegram:1")
    woke = trio.Event()

    async def idle_actor() -> None:
        with trio.move_on_after(3600) as tenure.idle:
            await trio.sleep_forever()
        woke.set()
        await trio.lowlevel.checkpoint()  # what it still holds
        people.leave(tenure)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle_actor)
        await trio.testing.wait_all_tasks_blocked()
        retired = people.retire(["telegram:1", "waha:9"], ["person:1"])
        assert retired == [tenure]
        assert await people.wait_for_predecessors("person:1", timeout_s=10)
        assert woke.is_set()
        assert tenure.ended.is_set()
        assert people.tenure("telegram:1") is None


@pytest.mark.autojump
async def test_a_successor_waits_no_longer_than_its_bound() -> None:
    people = People()
    people.enter("telegram:1")  # never ends
    people.retire(["telegram:1"], ["person:1"])
    assert not await people.wait_for_predecessors("person:1", timeout_s=60)
    assert await people.wait_for_predecessors("person:1", timeout_s=0.05)  # nothing left
