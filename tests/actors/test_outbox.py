"""The outbox sender on trio's MockClock, a real SQLite store and the fake Bot API (in-process)."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actors import OutboxStats, Pacing, run_outbox_sender
from concierge.channels import SendResult, SendStatus, TelegramSender
from concierge.observability import Status
from concierge.protocol import Channel, OutboundReply, OutboxNudge, OutboxRow
from concierge.store import Store, StoreUnavailable
from tests.channels.telegram_support import in_process_client, trio_wallclock
from tests.fakes.telegram_api import ApiFailure, FakeTelegram
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def enqueue(store: Store, chat: int, text: str) -> int:
    return await store.enqueue_reply(
        OutboundReply(
            correlation_id=f"c{chat}",
            channel=Channel.TELEGRAM,
            user_key=f"telegram:{chat}",
            chat_id=str(chat),
            text=text,
        )
    )


@attrs.define
class Harness:
    fake: FakeTelegram
    store: Store
    stats: OutboxStats
    nudge: trio.MemorySendChannel[OutboxNudge]
    sender: Any


@asynccontextmanager
async def outbox(
    tmp_path: Path,
    *,
    pacing: Pacing | None = None,
    poll_interval_s: float = 5.0,
    store: Any = None,
    before_start: Callable[[Store], Any] | None = None,
) -> AsyncIterator[Harness]:
    fake = FakeTelegram()
    async with sqlite_store(tmp_path) as real_store, in_process_client(fake) as client:
        used = store(real_store) if store is not None else real_store
        if before_start is not None:
            await before_start(real_store)
        stats = OutboxStats(channel=Channel.TELEGRAM)
        send, receive = trio.open_memory_channel[OutboxNudge](8)
        sender = TelegramSender(client=client)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_outbox_sender(
                    sender=sender,
                    store=used,
                    nudges=receive,
                    pacing=pacing,
                    poll_interval_s=poll_interval_s,
                    stats=stats,
                    clock=trio_wallclock(),
                    task_status=task_status,
                )
            )
            with send:
                yield Harness(fake=fake, store=real_store, stats=stats, nudge=send, sender=sender)
            nursery.cancel_scope.cancel()


@pytest.mark.autojump
async def test_rows_left_unsent_are_sent_at_start(tmp_path: Path) -> None:
    async def leftovers(store: Store) -> None:
        for i in range(3):
            await enqueue(store, 7, f"reste {i}")

    async with outbox(tmp_path, before_start=leftovers) as h:
        await eventually(lambda: h.stats.sent == 3, "the three leftover rows to be sent")
        assert h.fake.texts_to(7) == ["reste 0", "reste 1", "reste 2"]
        assert await h.store.pending_outbox(Channel.TELEGRAM) == []


async def test_nudge_wakes_the_sender_before_the_poll_interval(tmp_path: Path) -> None:
    # real clock: a store call in a thread would let a MockClock jump to the poll deadline
    async with outbox(tmp_path, poll_interval_s=3600) as h:
        await eventually(
            lambda: h.stats.backlog == 0 and h.stats.in_flight == 0,
            "the sender to settle with nothing due",
            timeout_s=10,
        )
        await enqueue(h.store, 7, "vite")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(
            lambda: h.stats.sent == 1, "the nudged row to be sent", timeout_s=60
        )  # far below the hour


@pytest.mark.autojump
async def test_flood_wait_is_honoured_then_the_row_is_sent(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        h.fake.fail_next("sendMessage", FakeTelegram.too_many_requests(retry_after=30))
        await enqueue(h.store, 7, "après la pause")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 1, "the row to be sent after the flood wait")
        first, second = h.fake.calls_to("sendMessage")
        assert second.at - first.at >= 30
        assert h.stats.retries == 1
        assert h.fake.texts_to(7) == ["après la pause"]


@pytest.mark.autojump
async def test_blocked_user_is_marked_unreachable_and_never_retried(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        await h.store.resolve_user(Channel.TELEGRAM, "telegram:7")
        h.fake.block(chat_id=7)
        await enqueue(h.store, 7, "un")
        await enqueue(h.store, 7, "deux")
        await enqueue(h.store, 8, "pour un autre")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(
            lambda: h.stats.unreachable == 1 and h.stats.sent == 1,
            "one user marked unreachable and the other user's row sent",
        )
        await trio.sleep(3600)  # an hour later: nothing more was tried
        assert [c.params["chat_id"] for c in h.fake.calls_to("sendMessage")] == ["7", "8"]
        user = await h.store.user_for_key("telegram:7")
        assert user is not None
        assert user.unreachable
        assert await h.store.pending_outbox(Channel.TELEGRAM) == []


@pytest.mark.autojump
async def test_unparsable_html_is_resent_as_plain_text(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        h.fake.fail_next("sendMessage", FakeTelegram.cannot_parse_entities())
        await enqueue(h.store, 7, "**Bonjour**")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 1, "the row to be resent as plain text")
        assert [m.raw for m in h.fake.sent] == ["Bonjour"]
        assert h.stats.retries == 0


@pytest.mark.autojump
async def test_rejected_row_is_given_up_and_the_next_one_goes(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        h.fake.fail_next(
            "sendMessage", ApiFailure(status=400, description="Bad Request: chat not found")
        )
        await enqueue(h.store, 7, "refusé")
        await enqueue(h.store, 7, "accepté")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 1, "the row after the rejected one to be sent")
        assert h.fake.texts_to(7) == ["accepté"]
        assert (h.stats.failures, h.stats.retries) == (1, 0)


@pytest.mark.autojump
async def test_a_row_waiting_for_its_retry_holds_back_that_users_later_rows(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        h.fake.fail_next("sendMessage", FakeTelegram.server_error(), FakeTelegram.server_error())
        await enqueue(h.store, 7, "premier")
        await eventually(lambda: h.stats.retries == 1, "the first attempt to fail")
        for text in ("deuxième", "troisième"):
            await enqueue(h.store, 7, text)
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 3, "the three rows to be sent in order")
        assert h.fake.texts_to(7) == ["premier", "deuxième", "troisième"]
        assert h.stats.retries == 2


@pytest.mark.autojump
async def test_twenty_users_ten_rapid_messages_each_arrive_in_order_without_flood_errors(
    tmp_path: Path,
) -> None:
    async with outbox(tmp_path) as h:
        h.fake.flood_interval_s = 1.0  # Telegram's per-chat limit, enforced by the fake
        for i in range(10):
            for user in range(20):
                await enqueue(h.store, 1000 + user, f"{user}:{i}")
            await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 200, "all 200 rows to be sent")
        for user in range(20):
            assert h.fake.texts_to(1000 + user) == [f"{user}:{i}" for i in range(10)]
        assert h.stats.retries == 0  # pacing kept every chat under one message per second
        for user in range(20):
            times = [m.at for m in h.fake.sent if m.chat_id == str(1000 + user)]
            assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


@pytest.mark.autojump
async def test_order_holds_per_user_when_sends_fail_at_random(tmp_path: Path) -> None:
    rng = random.Random(7)
    async with outbox(tmp_path) as h:
        failures = [
            rng.choice([FakeTelegram.server_error(), FakeTelegram.too_many_requests(retry_after=2)])
            for _ in range(40)
        ]
        h.fake.fail_next("sendMessage", *failures)
        for i in range(10):
            for user in range(20):
                await enqueue(h.store, 2000 + user, f"{user}:{i}")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(
            lambda: h.stats.sent == 200, "all 200 rows to be sent despite the failures", step_s=1.0
        )
        for user in range(20):
            assert h.fake.texts_to(2000 + user) == [f"{user}:{i}" for i in range(10)]
        assert h.stats.retries == 40


@pytest.mark.autojump
async def test_global_rate_spreads_a_burst_to_many_chats(tmp_path: Path) -> None:
    pacing = Pacing(global_rate_per_s=10.0, global_burst=10, concurrency=100)
    async with outbox(tmp_path, pacing=pacing) as h:
        for user in range(50):
            await enqueue(h.store, 3000 + user, "annonce")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 50, "the 50 announcements to be sent")
        first = min(m.at for m in h.fake.sent)
        times = sorted(m.at - first for m in h.fake.sent)
        for t in times:  # never more than burst + rate·t sends by time t
            assert sum(1 for u in times if u <= t) <= 10 + 10 * t + 1e-9
        assert times[-1] >= 3.9


@pytest.mark.autojump
async def test_row_is_given_up_after_max_attempts(tmp_path: Path) -> None:
    pacing = Pacing(max_attempts=3, backoff_initial_s=1.0)
    async with outbox(tmp_path, pacing=pacing) as h:
        h.fake.fail_next("sendMessage", *[FakeTelegram.server_error()] * 5)
        await enqueue(h.store, 7, "jamais")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.failures == 1, "the row to be given up")
        await trio.sleep(3600)
        assert len(h.fake.calls_to("sendMessage")) == 3
        assert h.stats.retries == 2


class DownStore:
    """The real store, whose outbox reads fail while ``down`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = True
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def pending_outbox(self, channel: Channel, **kwargs: Any) -> Any:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("connection refused")
        return await self._store.pending_outbox(channel, **kwargs)


@pytest.mark.autojump
async def test_store_outage_is_waited_out_and_reported(tmp_path: Path) -> None:
    holder: dict[str, DownStore] = {}

    def wrap(store: Store) -> DownStore:
        holder["store"] = DownStore(store)
        return holder["store"]

    async with outbox(tmp_path, store=wrap) as h:
        down = holder["store"]
        await enqueue(h.store, 7, "après la panne")
        await eventually(lambda: down.reads >= 3, "three failed outbox reads")
        assert h.stats.store_down
        [check] = h.stats.health_checks()
        assert check.status is Status.WARN
        down.down = False
        await eventually(lambda: h.stats.sent == 1, "the row to be sent once the store is back")
        assert not h.stats.store_down


class CrashingSender:
    channel = Channel.TELEGRAM

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, row: OutboxRow) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug")
        return SendResult(status=SendStatus.SENT)


@pytest.mark.autojump
async def test_a_crashing_sender_counts_as_a_failed_attempt(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store:
        stats = OutboxStats(channel=Channel.TELEGRAM)
        sender = CrashingSender()
        send, receive = trio.open_memory_channel[OutboxNudge](1)
        await enqueue(store, 7, "x")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_outbox_sender(
                    sender=sender, store=store, nudges=receive, stats=stats, clock=trio_wallclock()
                )
            )
            await eventually(lambda: stats.sent == 1, "the row to be sent after the crash")
            nursery.cancel_scope.cancel()
        assert stats.retries == 1
        send.close()


@pytest.mark.autojump
async def test_metrics_and_health_describe_the_sender(tmp_path: Path) -> None:
    async with outbox(tmp_path) as h:
        await enqueue(h.store, 7, "x")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 1, "the row to be sent")
        names = {m.name: m for m in h.stats.metrics()}
        assert names["concierge_outbox_sent"].samples[0].value == 1
        [check] = h.stats.health_checks()
        assert check.key == "outbox.telegram:backlog"
        assert check.status is Status.PASS


class SlowReads:
    """The real store, whose outbox reads come back late: their rows may be stale by then."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def pending_outbox(self, channel: Channel, **kwargs: Any) -> Any:
        rows = await self._store.pending_outbox(channel, **kwargs)
        await trio.sleep(0.5)
        return rows


@pytest.mark.autojump
async def test_a_stale_read_never_sends_a_row_twice(tmp_path: Path) -> None:
    pacing = Pacing(per_chat_interval_s=0.0)
    async with outbox(tmp_path, pacing=pacing, store=SlowReads) as h:
        for i in range(5):
            await enqueue(h.store, 7, f"m{i}")
        await h.nudge.send(OutboxNudge(channel=Channel.TELEGRAM))
        await eventually(lambda: h.stats.sent == 5, "the five rows to be sent")
        await trio.sleep(30)
        assert h.fake.texts_to(7) == [f"m{i}" for i in range(5)]


def test_outbox_backoff_stays_capped_after_any_number_of_attempts() -> None:
    pacing = Pacing(backoff_initial_s=1.0, backoff_max_s=300.0)
    assert 300.0 <= pacing.backoff_s(10_000) <= 330.0


class InDoubtWatch:
    """A sender taking 100 ms per send and a store wrapper: together they count each
    chat's rows in doubt (sent, not yet recorded as sent) and the sends in flight."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.in_doubt: dict[str, int] = {}
        self.most_in_doubt_per_chat = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.order: dict[str, list[str]] = {}
        self.chat_of: dict[int, str] = {}

    @property
    def channel(self) -> Channel:
        return Channel.TELEGRAM

    async def send(self, row: OutboxRow) -> SendResult:
        chat = row.chat_id
        self.chat_of[row.outbox_id] = chat
        self.in_doubt[chat] = self.in_doubt.get(chat, 0) + 1
        self.most_in_doubt_per_chat = max(self.most_in_doubt_per_chat, self.in_doubt[chat])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(0.1)
        finally:
            self.in_flight -= 1
        self.order.setdefault(chat, []).append(row.text)
        return SendResult(status=SendStatus.SENT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def mark_sent(self, outbox_id: int, **kwargs: Any) -> None:
        await self._store.mark_sent(outbox_id, **kwargs)
        self.in_doubt[self.chat_of[outbox_id]] -= 1


@pytest.mark.autojump
async def test_chats_are_sent_to_concurrently_with_one_row_in_doubt_per_chat(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as store:
        watch = InDoubtWatch(store)
        stats = OutboxStats(channel=Channel.TELEGRAM)
        send, receive = trio.open_memory_channel[OutboxNudge](1)
        for i in range(3):
            for chat in range(40):
                await enqueue(store, 5000 + chat, f"{chat}:{i}")
        pacing = Pacing.for_rate(rate_per_s=30.0, per_chat_interval_s=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_outbox_sender(
                    sender=watch,
                    store=watch,
                    nudges=receive,
                    pacing=pacing,
                    stats=stats,
                    clock=trio_wallclock(),
                )
            )
            await eventually(lambda: stats.sent == 120, "the 120 rows to be sent")
            nursery.cancel_scope.cancel()
        send.close()
        # a 100 ms round trip at 30 messages/s needs about three sends in flight
        assert watch.most_in_flight >= 3
        assert watch.most_in_doubt_per_chat == 1
        for chat in range(40):
            assert watch.order[str(5000 + chat)] == [f"{chat}:{i}" for i in range(3)]


def test_pacing_for_a_rate_covers_the_round_trip() -> None:
    broadcast = Pacing.for_rate(rate_per_s=1000.0, per_chat_interval_s=1.0, send_s=0.5)
    assert (broadcast.global_burst, broadcast.concurrency) == (1000, 500)
    small = Pacing.for_rate(rate_per_s=5.0, per_chat_interval_s=2.0, send_s=5.0)
    assert (small.global_burst, small.concurrency, small.per_chat_interval_s) == (5, 32, 2.0)
