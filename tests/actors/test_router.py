"""The router: actors started on demand, reaped when idle, restarted after a crash, busy replies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import RouterStats, run_router
from actors.handover import Handover
from actors.inbox_replay import replay_once
from actors.router import conversation_key
from concierge.domain import Admission, Reply as R
from concierge.protocol import (
    ConversationMsg,
    Inbound,
    ProviderCall,
    ProviderReply,
    TurnRecord,
    utcnow,
)
from concierge.settings import ApiKey
from concierge.store import SessionCache, Store, StoreUnavailable
from tests import shipped
from tests.actors.harness import CrashOnce, running_concierge
from tests.providers.scripted import Reply, ScriptedAdapter
from tests.shipped import reply_text
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """A clock that moves only when the test jumps it (SQLite runs in threads: no autojump)."""
    return trio.testing.MockClock()


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if "mock_clock" in request.fixturenames:
        return ("trio", {"clock": request.getfixturevalue("mock_clock")})
    return "trio"


def echo() -> ScriptedAdapter:
    return ScriptedAdapter("scripted", default=lambda call, key: Reply(text=f"echo: {call.query}"))


class HoldAdapter:
    """Answers only once ``release`` is set; ``entered`` says a call is being held."""

    name = "hold"
    kind = "anthropic"
    model = "hold-model"

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()
        self.calls = 0

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return ProviderReply(text=f"held: {call.query}", model=self.model)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_full_queue_gets_one_busy_reply_and_the_message_is_marked_processed(
    tmp_path: Path,
) -> None:
    hold = HoldAdapter()
    async with running_concierge(tmp_path, adapters=[hold], queue_size=1) as h:
        first = await h.send("horaires de la messe ?")
        await hold.entered.wait()
        second = await h.send("et le samedi ?")  # waits in the queue
        third = await h.send("et en semaine ?")  # queue full: busy reply
        fourth = await h.send("allô ?")  # still full: no second notice
        stats = h.service.router
        await eventually(
            lambda: stats.busy_replies + stats.busy_dropped == 2,
            "one busy reply and one dropped notice",
        )
        assert (stats.busy_replies, stats.busy_dropped) == (1, 1)
        assert await h.replies_to("u1") == [reply_text(R.BUSY, "fr")]
        pending = {row.inbox_id for row in await h.store.pending_inbox()}
        assert third.inbox_id not in pending
        assert fourth.inbox_id not in pending
        hold.release.set()
        reports = [await h.report(), await h.report()]
        assert [r.inbox_id for r in reports] == [first.inbox_id, second.inbox_id]
        assert hold.calls == 2
        assert await h.store.pending_inbox() == []


async def test_idle_actor_is_reaped_and_restarted_with_its_context(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], idle_s=60.0) as h:
        await h.ask("Quelles sont les messes du dimanche ?")
        metrics, stats = h.service.turn_metrics, h.service.router
        assert metrics.live == 1
        mock_clock.jump(59)
        await trio.testing.wait_all_tasks_blocked()
        assert metrics.live == 1
        mock_clock.jump(2)
        await trio.testing.wait_all_tasks_blocked()
        assert metrics.live == 0
        assert metrics.reaped == 1
        assert conversation_key("console:u1") not in h.service.conversations
        await h.ask("Et le samedi ?")
        assert stats.actors_started == 2
        texts = [t.text for t in adapter.calls[-1][0].turns]
        assert texts[:2] == [
            "<user_message>\nQuelles sont les messes du dimanche ?\n</user_message>",
            "echo: Quelles sont les messes du dimanche ?",
        ]


async def test_a_crashed_conversation_restarts_alone_and_finishes_its_message(
    tmp_path: Path,
) -> None:
    faulty: list[CrashOnce] = []

    def wrap(store: Store) -> Store:
        faulty.append(CrashOnce(store))
        return faulty[0]

    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], wrap_store=wrap) as h:
        await h.ask("horaires de la messe ?", user="bob")
        doomed = await h.accept("horaires des confessions ?", user="alice")
        faulty[0].before_commit.add(doomed.correlation_id)
        await h.router_send.send(doomed)
        bob_report = await h.ask("et le samedi ?", user="bob")
        assert bob_report.user_key == "console:bob"
        alice_report = await h.report()
        assert alice_report.inbox_id == doomed.inbox_id
        children = {c.id: c for c in h.service.conversations.statistics().children}
        assert children[conversation_key("console:alice")].restart_count == 1
        assert children[conversation_key("console:bob")].restart_count == 0
        # The restarted actor answered the row the crash left unprocessed, once.
        assert await h.replies_to("alice") == ["echo: horaires des confessions ?"]
        assert [c.query for c, _ in adapter.calls].count("horaires des confessions ?") == 2
        assert await h.store.pending_inbox() == []


async def test_a_crash_after_the_reply_is_durable_does_not_answer_twice(tmp_path: Path) -> None:
    faulty: list[CrashOnce] = []

    def wrap(store: Store) -> Store:
        faulty.append(CrashOnce(store))
        return faulty[0]

    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], wrap_store=wrap) as h:
        doomed = await h.accept("horaires des confessions ?", user="alice")
        faulty[0].after_commit.add(doomed.correlation_id)
        await h.router_send.send(doomed)
        await eventually(lambda: not faulty[0].after_commit, "the crash after the commit")
        assert (await h.ask("et le samedi ?", user="alice")).user_key == "console:alice"
        children = {c.id: c for c in h.service.conversations.statistics().children}
        assert children[conversation_key("console:alice")].restart_count == 1
        assert await h.replies_to("alice") == [
            "echo: horaires des confessions ?",
            "echo: et le samedi ?",
        ]
        assert await h.store.pending_inbox() == []


class ContextAlwaysFails:
    """The real cache, except that reading a context window always raises (a poison row)."""

    def __init__(self, inner: SessionCache) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_context(self, user_key: str) -> Any:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("injected fault")


async def test_a_row_that_keeps_crashing_its_actor_is_given_up_with_an_apology(
    tmp_path: Path,
) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], wrap_cache=ContextAlwaysFails) as h:
        report = await h.ask("horaires de la messe ?")
        assert report.reply == reply_text(R.PROVIDER_FAILED, "fr")
        assert await h.replies_to("u1") == [report.reply]
        assert h.service.turn_metrics.turns_abandoned == 1
        children = {c.id: c for c in h.service.conversations.statistics().children}
        assert children[conversation_key("console:u1")].restart_count == 3
        assert adapter.calls == []
        assert await h.store.pending_inbox() == []


class StoreDownFor:
    """The real store, except that completing a turn is unavailable the first ``n`` times."""

    def __init__(self, inner: Store, n: int) -> None:
        self._inner = inner
        self.left = n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        if self.left > 0:
            self.left -= 1
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable("database is locked")
        return await self._inner.complete_turn(turn)


async def test_a_store_outage_does_not_count_against_the_message(tmp_path: Path) -> None:
    adapter = echo()
    made: list[StoreDownFor] = []

    def wrap(inner: Store) -> Store:
        made.append(StoreDownFor(inner, n=4))
        return made[-1]

    async with running_concierge(tmp_path, adapters=[adapter], wrap_store=wrap) as h:
        report = await h.ask("horaires de la messe ?")
        assert report.reply == "echo: horaires de la messe ?"
        assert h.service.turn_metrics.turns_abandoned == 0
        assert made[0].left == 0  # the outage failed four turns, more than MAX_TURN_ATTEMPTS


async def test_unprocessed_rows_are_replayed_in_order(tmp_path: Path) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter]) as h:
        rows = [await h.accept(f"question {i} sur la messe") for i in range(3)]
        sent = await replay_once(
            store=h.store, router=h.router_send, cutoff=utcnow() + timedelta(seconds=1)
        )
        assert sent == 3
        reports = [await h.report() for _ in rows]
        assert [r.inbox_id for r in reports] == [m.inbox_id for m in rows]
        # Replaying again sends nothing: the rows are processed.
        assert await replay_once(store=h.store, router=h.router_send, cutoff=utcnow()) == 0


async def test_rows_left_by_a_stopped_daemon_are_answered_at_the_next_start(tmp_path: Path) -> None:
    async with running_concierge(tmp_path) as h:
        left = [
            await h.accept("A quelle heure est la messe dimanche ?", user=u) for u in ("a", "b")
        ]
    async with running_concierge(tmp_path) as h:
        reports = {(await h.report()).inbox_id for _ in left}
        assert reports == {m.inbox_id for m in left}
        assert await h.store.pending_inbox() == []


def test_conversation_keys_are_stable_pseudonyms() -> None:
    key = conversation_key("waha:221770000000@c.us")
    assert key == conversation_key("waha:221770000000@c.us")
    assert key != conversation_key("waha:221770000001@c.us")
    assert "221770000000" not in key


async def test_router_reports_health_and_metrics(tmp_path: Path) -> None:
    async with running_concierge(tmp_path) as h:
        await h.ask("horaires de la messe ?")
        checks = {c.key: c for c in h.service.health_checks()}
        assert checks["conversations:live_actors"].observed_value == 1
        families = {m.name: m for m in h.service.metrics()}
        assert families["concierge_conversations_live"].samples[0].value == 1
        assert families["concierge_router_messages"].samples[0].value == 1
        turns = {s.labels["service_type"]: s.value for s in families["concierge_turns"].samples}
        assert turns == {"RENSEIGNEMENT": 1}
        assert h.service.statistics()["routed"] == 1


class SlowRegistry:
    """Hosts actors that are channels the test reads; the ``slow`` key's starts only on ``start``."""

    def __init__(self, queue_size: int, slow: str) -> None:
        self.slow = slow
        self.queue_size = queue_size
        self.handovers: dict[str, Handover] = {}
        self.children: dict[str, trio.MemoryReceiveChannel[ConversationMsg]] = {}
        self.sends: dict[str, trio.MemorySendChannel[ConversationMsg]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.handovers or key in self.sends

    def get(self, key: str) -> trio.MemorySendChannel[ConversationMsg] | None:
        return self.sends.get(key)

    def start_child_soon(self, key: str, user_key: str, handover: Handover) -> None:
        self.handovers[key] = handover
        if key != self.slow:
            self.start(key)

    def start(self, key: str) -> None:
        """What a starting actor does: take the handover, then open its own queue."""
        send, receive = trio.open_memory_channel[ConversationMsg](self.queue_size)
        for msg in self.handovers.pop(key).take():
            send.send_nowait(msg)
        self.sends[key], self.children[key] = send, receive

    def fail(self, key: str) -> None:
        """What an actor that fails before it started leaves behind: nothing hosted."""
        del self.handovers[key]


@asynccontextmanager
async def routing(
    registry: SlowRegistry, store: Store, stats: RouterStats
) -> AsyncIterator[tuple[trio.MemorySendChannel[Inbound], trio.Nursery]]:
    """A router in front of ``registry``; yields its inbox and the nursery it runs in."""
    inbox_send, inbox = trio.open_memory_channel[Inbound](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_router,
                inbox=inbox,
                conversations=registry,
                store=store,
                outbox_nudges={},
                languages=shipped.languages(),
                stats=stats,
                queue_size=3,
            )
        )
        yield inbox_send, nursery


async def test_messages_wait_in_order_while_their_actor_starts_and_others_are_not_held_up(
    tmp_path: Path,
) -> None:
    registry = SlowRegistry(queue_size=3, slow=conversation_key("console:slow"))
    stats = RouterStats()
    async with (
        running_concierge(tmp_path) as h,  # for its store and inbox rows
        routing(registry, h.store, stats) as (inbox_send, nursery),
    ):
        slow = [await h.accept(f"message {i}", user="slow") for i in range(4)]
        for msg in slow:
            await inbox_send.send(msg)
        await eventually(lambda: stats.busy_replies == 1, "the busy reply to the slow user")
        fast = await h.accept("message rapide", user="fast")
        await inbox_send.send(fast)
        await eventually(lambda: stats.routed == 1, "the fast user's message to be routed")
        assert registry.children[conversation_key("console:fast")].receive_nowait() == fast
        assert conversation_key("console:slow") not in registry.sends
        registry.start(conversation_key("console:slow"))
        await eventually(lambda: stats.routed == 4, "the slow user's messages to be routed")
        child = registry.children[conversation_key("console:slow")]
        assert [child.receive_nowait() for _ in range(3)] == slow[:3]
        assert await h.replies_to("slow") == [reply_text(R.BUSY, "fr")]
        nursery.cancel_scope.cancel()


async def test_rows_left_by_an_actor_that_failed_to_start_wait_for_the_replay(
    tmp_path: Path,
) -> None:
    registry = SlowRegistry(queue_size=3, slow=conversation_key("console:slow"))
    stats = RouterStats()
    async with (
        running_concierge(tmp_path) as h,
        routing(registry, h.store, stats) as (inbox_send, nursery),
    ):
        lost = await h.accept("premier message", user="slow")
        await inbox_send.send(lost)
        await eventually(lambda: stats.actors_started == 1, "the slow user's actor to start")
        registry.fail(conversation_key("console:slow"))
        registry.slow = ""  # the next start succeeds
        again = await h.accept("second message", user="slow")
        await inbox_send.send(again)
        await eventually(lambda: stats.routed == 1, "the second message to be routed")
        child = registry.children[conversation_key("console:slow")]
        assert child.receive_nowait() == again
        assert stats.start_failures == 1
        pending = await h.store.pending_inbox(user_key="console:slow")
        assert [row.inbox_id for row in pending] == [lost.inbox_id, again.inbox_id]
        nursery.cancel_scope.cancel()


async def test_a_leased_actor_with_a_full_queue_leaves_no_row_counted_in_flight(
    tmp_path: Path,
) -> None:
    """Under a lease a full queue drops the "look" (the actor reads the store): the row's
    admission must go with it, or the replica counts it in flight with no turn to end."""
    registry = SlowRegistry(queue_size=1, slow=conversation_key("console:busy"))
    stats = RouterStats()
    admission = Admission(max_turns=8, min_turns=8)
    inbox_send, inbox = trio.open_memory_channel[Inbound](16)
    async with running_concierge(tmp_path) as h, trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_router,
                inbox=inbox,
                conversations=registry,
                store=h.store,
                outbox_nudges={},
                languages=shipped.languages(),
                stats=stats,
                queue_size=1,
                leased=True,
                admission=admission,
            )
        )
        rows = [await h.accept(f"message {i}", user="busy") for i in range(2)]
        for row in rows:
            assert admission.admit(row.inbox_id)
        await inbox_send.send(rows[0])
        await eventually(lambda: stats.actors_started == 1, "the actor to start")
        registry.start(conversation_key("console:busy"))  # its queue now holds the first row
        await inbox_send.send(rows[1])
        await eventually(lambda: stats.routed == 2, "the second row to find the queue full")
        assert not admission.holds(rows[1].inbox_id)
        assert admission.holds(rows[0].inbox_id)
        nursery.cancel_scope.cancel()
