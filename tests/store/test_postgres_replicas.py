"""Several replicas on one PostgreSQL database: leases fenced by the database, outbox claims,
offsets that never go back, and singletons held by a session of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from actors import Pacing, TurnGate, run_outbox_sender
from actors.leases import ConversationLeases
from concierge.app.drain import drain, release_nothing
from concierge.channels import SendResult, SendStatus
from concierge.protocol import Channel, OutboxNudge, OutboxRow, TurnRecord
from concierge.store import StoreError, migrate
from concierge.store.errors import StaleLease
from concierge.store.postgres import PostgresStore, open_postgres
from concierge.store.postgres_replicas import lock_id
from tests.store.conftest import fresh_schema
from tests.store.records import reply
from tests.store.test_postgres_batches import all_at_once, inbound
from tests.stores import store_settings
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def replicas(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two replicas hold them."""
    settings = store_settings(data_dir=tmp_path, database_url=await fresh_schema(pg_database))
    await migrate(settings)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_postgres(attrs.evolve(settings, replica_id="replica-a"))
        )
        b = await stack.enter_async_context(
            open_postgres(attrs.evolve(settings, replica_id="replica-b"))
        )
        yield a, b


def answer(inbox_id: int, *, key: str, epoch: int, user: str) -> TurnRecord:
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=None,
        correlation_id=f"cid-{inbox_id}",
        service_type=None,
        replies=(reply(f"answer {inbox_id}", inbox_id=inbox_id, user=user),),
        lease_key=key,
        lease_epoch=epoch,
    )


async def test_a_lease_is_held_by_one_replica_until_it_expires_or_is_released(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    assert await a.acquire_lease("conv-1", user_key="u", ttl_s=30) == 1
    assert await b.acquire_lease("conv-1", user_key="u", ttl_s=30) is None
    assert await a.renew_lease("conv-1", 1, ttl_s=30)
    assert (
        await a.acquire_lease("conv-1", user_key="u", ttl_s=30) == 2
    )  # its own again: a new epoch
    assert not await a.renew_lease("conv-1", 1, ttl_s=30)
    await a.release_lease("conv-1", 2)
    assert await b.acquire_lease("conv-1", user_key="u", ttl_s=0.2) == 3
    taken: list[int | None] = []

    async def a_takes_over() -> bool:
        taken.append(await a.acquire_lease("conv-1", user_key="u", ttl_s=30))
        return taken[-1] is not None

    await eventually(a_takes_over, "the expired lease to be taken over")
    assert taken[-1] == 4
    assert not await b.renew_lease("conv-1", 3, ttl_s=30)


async def test_the_database_refuses_a_turn_committed_under_a_stale_epoch(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    user = "telegram:42"
    accepted = [await a.accept(inbound(n, user=user)) for n in range(3)]
    first, second, third = (x.inbox_id for x in accepted)
    old = await a.acquire_lease("conv-42", user_key="u", ttl_s=0.1)
    assert old is not None
    assert await a.complete_turn(answer(first, key="conv-42", epoch=old, user=user))
    new: list[int | None] = [None]

    async def b_takes_over() -> bool:
        new[0] = await b.acquire_lease("conv-42", user_key="u", ttl_s=30)
        return new[0] is not None

    await eventually(b_takes_over, "replica b to take the lease over")
    assert new[0] is not None
    with pytest.raises(StaleLease):
        await a.complete_turn(answer(second, key="conv-42", epoch=old, user=user))
    # Nothing of the refused turn was written: the new holder answers the row.
    assert [r.inbox_id for r in await b.pending_inbox(user_key=user)] == [second, third]
    assert await b.complete_turn(answer(second, key="conv-42", epoch=new[0], user=user))
    # In a batch, the stale turn fails alone and the others commit.
    other = (await a.accept(inbound(1, user="telegram:43"))).inbox_id
    mine = await a.acquire_lease("conv-43", user_key="u", ttl_s=30)
    assert mine is not None
    results = await all_at_once(
        [
            lambda: a.complete_turn(answer(third, key="conv-42", epoch=old, user=user)),
            lambda: a.complete_turn(answer(other, key="conv-43", epoch=mine, user="telegram:43")),
        ]
    )
    assert isinstance(results[0], StaleLease)
    assert isinstance(results[1], tuple)
    assert len(results[1]) == 1
    sent = await a.fetchval("SELECT count(*) FROM outbox WHERE text LIKE 'answer %'")
    assert sent == 3


async def test_each_outbox_row_is_claimed_by_one_replica_and_a_user_stays_with_one(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    users = [f"telegram:{n}" for n in range(1, 11)]
    for n in range(3):
        for user in users:
            await a.enqueue_reply(reply(f"{user} #{n}", user=user))
    rounds = await all_at_once([partial(s.pending_outbox, Channel.TELEGRAM) for s in (a, b) * 3])
    owner: dict[int, int] = {}
    for i, rows in enumerate(rounds):
        assert not isinstance(rows, StoreError)
        for row in rows:
            assert owner.setdefault(row.outbox_id, i % 2) == i % 2, "a row claimed twice"
    assert len(owner) == 30
    by_user: dict[str, set[int]] = {}
    for i, rows in enumerate(rounds):
        for row in rows:
            by_user.setdefault(row.user_key, set()).add(i % 2)
    assert all(len(replicas_) == 1 for replicas_ in by_user.values())
    # The rows a replica claimed are its own to read again, and nobody else's.
    mine = await a.pending_outbox(Channel.TELEGRAM, limit=100)
    theirs = await b.pending_outbox(Channel.TELEGRAM, limit=100)
    assert {r.outbox_id for r in mine}.isdisjoint(r.outbox_id for r in theirs)
    assert len(mine) + len(theirs) == 30


async def test_a_dead_replicas_claims_pass_to_another_once_they_expire(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.enqueue_reply(reply("first", user="telegram:7"))
    await a.enqueue_reply(reply("second", user="telegram:7"))
    assert len(await a.pending_outbox(Channel.TELEGRAM)) == 2
    assert await b.pending_outbox(Channel.TELEGRAM) == []
    await a.fetchval("UPDATE outbox SET claimed_until = now() - interval '1 second'")
    assert [r.text for r in await b.pending_outbox(Channel.TELEGRAM)] == ["first", "second"]


async def test_a_stored_offset_never_goes_back(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.set_cursor("telegram.offset", "120")
    await b.set_cursor("telegram.offset", "99")
    assert await a.get_cursor("telegram.offset") == "120"
    await b.set_cursor("telegram.offset", "1000")
    assert await a.get_cursor("telegram.offset") == "1000"
    await a.set_cursor("other", "b")
    await a.set_cursor("other", "a")  # not a number: any value goes
    assert await a.get_cursor("other") == "a"


async def test_a_singleton_lock_dies_with_its_session(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    lock = lock_id("telegram.poller")
    async with a.open_session("elect") as first, b.open_session("elect") as second:
        assert await first.try_lock(lock)
        assert await first.holds(lock)
        assert not await second.try_lock(lock)
        await b.fetchval("SELECT pg_terminate_backend($1)", first.backend_pid)
        with pytest.raises(StoreError):
            await first.holds(lock)
        assert await second.try_lock(lock)


async def test_every_replica_hears_of_a_new_inbox_row(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    async with b.open_session("listen") as session, session.notices("concierge_inbox") as heard:
        await a.accept(inbound(1, user="telegram:5"))
        with trio.fail_after(10):
            assert await heard.receive() == "telegram:5"


async def test_a_lease_let_go_with_rows_pending_wakes_every_replica(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    async with (
        b.open_session("listen") as session,
        session.notices("concierge_released") as released,
    ):
        quiet = await a.acquire_lease("conv-8", user_key="telegram:8", ttl_s=30)
        assert quiet is not None
        await a.release_lease("conv-8", quiet)  # nothing pending: nobody is told
        await a.accept(inbound(1, user="telegram:9"))
        busy = await a.acquire_lease("conv-9", user_key="telegram:9", ttl_s=30)
        assert busy is not None
        await a.release_lease("conv-9", busy)
        with trio.fail_after(10):
            assert await released.receive() == "telegram:9"
        # A stopping replica lets every lease go at once; its people wait for nobody.
        again = await a.acquire_lease("conv-9", user_key="telegram:9", ttl_s=30)
        assert again is not None
        assert await a.release_leases() == 1
        with trio.fail_after(10):
            assert await released.receive() == "telegram:9"
        assert await b.acquire_lease("conv-9", user_key="telegram:9", ttl_s=30) == again + 1


async def test_a_holder_whose_lease_was_taken_stops_at_its_next_renewal(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    leases = ConversationLeases(a, ttl_s=0.3)
    outlived: list[bool] = []
    async with leases.holding("conv-5", user_key="telegram:5") as lease:
        assert lease is not None
        assert await b.acquire_lease("conv-5", user_key="telegram:5", ttl_s=30) is None
        await a.fetchval(
            "UPDATE conversation_leases SET holder = 'replica-b', epoch = epoch + 1 "
            "WHERE lease_key = 'conv-5'"
        )
        await trio.sleep(10)  # cancelled by the refused renewal, with the rest of the block
        outlived.append(True)
    assert lease.lost
    assert outlived == []
    assert leases.stats.lost == 1
    assert "conv-5" not in leases.held
    # The new holder's lease was left alone.
    assert await b.renew_lease("conv-5", lease.epoch + 1, ttl_s=30)


async def test_a_stopping_replica_gives_back_the_outbox_rows_it_claimed_and_did_not_send(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.enqueue_reply(reply("first", user="telegram:7"))
    await a.enqueue_reply(reply("second", user="telegram:7"))
    assert len(await a.pending_outbox(Channel.TELEGRAM)) == 2
    assert await b.pending_outbox(Channel.TELEGRAM) == []
    assert await a.release_outbox_claims() == 2
    assert [r.text for r in await b.pending_outbox(Channel.TELEGRAM)] == ["first", "second"]
    assert await a.release_outbox_claims() == 0  # the other replica's claims stay its own


@attrs.define
class Platform:
    """One chat's messages as the platform takes them, from every replica; answers slowly."""

    delivered: list[str] = attrs.field(factory=list)
    channel: Channel = Channel.TELEGRAM

    async def send(self, row: OutboxRow) -> SendResult:
        self.delivered.append(row.text)  # taken: whatever happens next, the user has it
        await trio.sleep(0.3)
        return SendResult(status=SendStatus.SENT)


async def test_a_draining_replica_sends_nothing_twice_when_the_other_goes_on_writing_replies(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    """The drain flushes A's outbox, then B (which took A's people over) writes replies
    while A's tree is still up: A's sender must neither claim them and be cut mid-send
    (the row stays claimed and unsent: a duplicate once B sends it after the claim's
    expiry) nor keep rows claimed past its exit (B would wait for the expiry)."""
    a, b = replicas
    platform = Platform()
    sending = TurnGate()
    await a.enqueue_reply(reply("r1", user="telegram:7"))
    async with trio.open_nursery() as tree:
        nudges_send, nudges = trio.open_memory_channel[OutboxNudge](8)
        await tree.start(
            partial(
                run_outbox_sender,
                sender=platform,
                store=a,
                nudges=nudges,
                pacing=Pacing(per_chat_interval_s=0.0),
                poll_interval_s=0.05,
                gate=sending,
            )
        )

        async def stop_tree() -> None:
            for text in ("r2", "r3"):  # B's turns answer the people A let go
                await b.enqueue_reply(reply(text, user="telegram:7"))
            await trio.sleep(0.3)  # A's sender polls meanwhile
            tree.cancel_scope.cancel()

        async def release_claims() -> None:
            await a.release_outbox_claims()

        with nudges_send:
            complete = await drain(
                timeout_s=10,
                set_draining=lambda: None,
                gate=TurnGate(),
                release=release_nothing,
                outbox=a,
                channels=[Channel.TELEGRAM],
                stop_tree=stop_tree,
                sending=sending,
                release_claims=release_claims,
            )
    assert complete
    assert platform.delivered == ["r1"]
    # B sends the rest at once, not after A's claims expire.
    rows = await b.pending_outbox(Channel.TELEGRAM)
    assert [r.text for r in rows] == ["r2", "r3"]
    for row in rows:
        await platform.send(row)
        await b.mark_sent(row.outbox_id)
    assert platform.delivered == ["r1", "r2", "r3"]
    assert await a.pending_outbox(Channel.TELEGRAM) == []
