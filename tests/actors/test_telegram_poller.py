"""The getUpdates poller, webhook registration and typing actor on MockClock against the fake Bot API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import structlog
import trio

from actors import (
    PresenceBoard,
    TelegramPollerStats,
    run_telegram_poller,
    run_telegram_typing,
    run_telegram_webhook_setup,
)
from actors.telegram import OFFSET_CURSOR, PollBackoff
from concierge.channels import TelegramApiError, TelegramClient
from concierge.domain import Ingest
from concierge.protocol import (
    Accepted,
    Channel,
    InboundMessage,
    TurnEnded,
    TurnStarted,
)
from concierge.store import Store, StoreUnavailable
from tests.channels.telegram_support import (
    Wired,
    in_process_client,
    rows_at_least,
    telegram_settings,
    wired_ingest,
)
from tests.fakes.telegram_api import ApiFailure, FakeTelegram
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

CONFLICT = ApiFailure(
    status=409,
    description="Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
)


@attrs.define
class Poller:
    fake: FakeTelegram
    client: TelegramClient
    wired: Wired
    stats: TelegramPollerStats
    cancel: trio.CancelScope


@asynccontextmanager
async def environment(
    tmp_path: Path, fake: FakeTelegram | None = None
) -> AsyncIterator[tuple[FakeTelegram, TelegramClient, Wired]]:
    fake = fake or FakeTelegram()
    async with (
        sqlite_store(tmp_path) as store,
        wired_ingest(store) as wired,
        in_process_client(fake) as client,
    ):
        yield fake, client, wired


@asynccontextmanager
async def poller(
    fake: FakeTelegram,
    client: TelegramClient,
    wired: Wired,
    *,
    ingest: Ingest | None = None,
    store: Store | None = None,
) -> AsyncIterator[Poller]:
    stats = TelegramPollerStats()
    settings = telegram_settings(token=fake.token, poll_timeout_s=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_telegram_poller(
                client=client,
                store=store or wired.store,
                ingest=ingest or wired.ingest,
                settings=settings,
                stats=stats,
                task_status=task_status,
            )
        )
        yield Poller(
            fake=fake, client=client, wired=wired, stats=stats, cancel=nursery.cancel_scope
        )
        nursery.cancel_scope.cancel()


async def test_updates_are_committed_and_the_offset_persisted(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired), poller(fake, client, wired) as p:
        updates = [fake.text_message(user_id=10 + i, text=f"q{i}") for i in range(5)]
        for update in updates:
            fake.add_update(update)
        await eventually(
            lambda: p.stats.offset == updates[-1]["update_id"] + 1,
            "the offset to move past the last update",
        )
        assert await wired.store.get_cursor(OFFSET_CURSOR) == str(updates[-1]["update_id"] + 1)
        rows = await wired.store.pending_inbox()
        assert [r.external_id for r in rows] == [str(u["update_id"]) for u in updates]
        call = fake.calls_to("getUpdates")[-1]
        assert call.params["allowed_updates"] == ["message"]
        assert 0 < call.params["timeout"] <= 50


async def test_restart_neither_loses_nor_replays(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        async with poller(fake, client, wired) as first:
            before = [fake.text_message(user_id=1, text=f"avant {i}") for i in range(5)]
            for update in before:
                fake.add_update(update)
            await eventually(
                lambda: first.stats.offset == before[-1]["update_id"] + 1,
                "the first poller's offset to move past the updates before the stop",
            )
        stored = await wired.store.get_cursor(OFFSET_CURSOR)
        later = [fake.text_message(user_id=1, text=f"pendant l'arrêt {i}") for i in range(3)]
        for update in later:
            fake.add_update(update)
        await trio.sleep(1)
        restarted = trio.current_time()
        async with poller(fake, client, wired) as second:
            await eventually(rows_at_least(wired.store, 8), "the eight updates in the inbox")
            await trio.sleep(5)
            first_call = next(c for c in fake.calls_to("getUpdates") if c.at >= restarted)
            assert first_call.params["offset"] == int(stored or 0)
            assert second.stats.updates == 3  # nothing fetched again
        rows = await wired.store.pending_inbox()
        assert [r.text for r in rows] == [
            *(f"avant {i}" for i in range(5)),
            *(f"pendant l'arrêt {i}" for i in range(3)),
        ]


async def test_updates_fetched_again_after_a_crash_are_deduplicated(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        updates = [fake.text_message(user_id=1, text=f"m{i}") for i in range(3)]
        async with poller(fake, client, wired) as first:
            for update in updates:
                fake.add_update(update)
            await eventually(
                lambda: first.stats.offset == updates[-1]["update_id"] + 1,
                "the first poller's offset to move past the last update",
            )
        # the crash came before the offset was stored: Telegram serves the batch again
        await wired.store.set_cursor(OFFSET_CURSOR, str(updates[0]["update_id"]))
        for update in updates:
            fake.add_update(update)
        async with poller(fake, client, wired) as second:
            await eventually(
                lambda: second.stats.offset == updates[-1]["update_id"] + 1,
                "the second poller's offset to move past the last update",
            )
            assert second.stats.updates == 3
            assert second.stats.accepted == 0
        assert len(await wired.store.pending_inbox()) == 3


async def test_conflict_is_logged_and_retried_with_growing_backoff(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        fake.fail_next("getUpdates", CONFLICT, CONFLICT, CONFLICT, CONFLICT)
        fake.add_update(fake.text_message(user_id=1, text="enfin"))
        with structlog.testing.capture_logs() as logs:
            async with poller(fake, client, wired) as p:
                await eventually(rows_at_least(wired.store, 1), "the update in the inbox")
        conflicts = [e for e in logs if e["event"] == "telegram.poll_conflict"]
        assert len(conflicts) == 4
        assert all(
            e["log_level"] == "warning" and "only one bot instance" in e["reason"]
            for e in conflicts
        )
        times = [c.at for c in fake.calls_to("getUpdates")]
        gaps = [b - a for a, b in itertools.pairwise(times[:5])]
        for gap, base in zip(gaps, [1, 2, 4, 8], strict=True):
            assert base <= gap <= base * 1.1 + 0.01  # doubling with up to 10 % jitter
        assert p.stats.conflicts == 4


@pytest.mark.autojump(threshold=0.05)  # SQLite commits in a thread while both pollers wait
async def test_two_pollers_conflict_without_processing_anything_twice(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        async with poller(fake, client, wired) as a, poller(fake, client, wired) as b:
            for i in range(10):
                fake.add_update(fake.text_message(user_id=1, text=f"m{i}"))
                await trio.sleep(3)
            await eventually(
                rows_at_least(wired.store, 10), "the ten updates in the inbox", step_s=1.0
            )
            assert a.stats.conflicts + b.stats.conflicts > 0
        rows = await wired.store.pending_inbox()
        assert [r.text for r in rows] == [f"m{i}" for i in range(10)]


async def test_leftover_webhook_is_removed_keeping_pending_updates(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        fake.webhook = {"url": "https://old.example/hook"}
        fake.add_update(fake.text_message(user_id=1, text="en attente"))
        async with poller(fake, client, wired):
            await eventually(rows_at_least(wired.store, 1), "the update in the inbox")
        [delete] = fake.calls_to("deleteWebhook")
        assert delete.params["drop_pending_updates"] is False


class FlakyStore:
    """The real store; ``accept`` finds it unavailable ``failures`` times."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.cursor_writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def accept(self, message: InboundMessage) -> Accepted:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database restarting")
        return await self._store.accept(message)

    async def set_cursor(self, name: str, value: str) -> None:
        self.cursor_writes.append(value)
        await self._store.set_cursor(name, value)


async def test_store_outage_holds_the_offset_until_the_update_is_committed(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        flaky = FlakyStore(wired.store, failures=3)
        ingest = Ingest(store=flaky, router=wired.router_send)
        update = fake.text_message(user_id=1, text="pendant la panne")
        fake.add_update(update)
        async with poller(fake, client, wired, ingest=ingest, store=flaky) as p:
            await eventually(
                lambda: flaky.cursor_writes == [str(update["update_id"] + 1)],
                "the offset past the update to be written once",
            )
            assert p.stats.store_errors >= 3
        assert [r.text for r in await wired.store.pending_inbox()] == ["pendant la panne"]


async def test_ignored_updates_move_the_offset_and_are_counted(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired), poller(fake, client, wired) as p:
        group = fake.text_message(user_id=1, chat_id=-5, chat_type="group", text="salut")
        fake.add_update(group)
        await eventually(
            lambda: p.stats.offset == group["update_id"] + 1,
            "the offset to move past the media group",
        )
        assert p.stats.ignored == {"not_private_chat": 1}
        assert await wired.store.pending_inbox() == []


async def test_wrong_token_stops_the_poller_loudly(tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with (
        sqlite_store(tmp_path) as store,
        wired_ingest(store) as wired,
        httpx2.AsyncClient(transport=fake.transport()) as http,
    ):
        bad = TelegramClient(token="999:wrong", base_url="http://fake", http=http)
        with pytest.raises(TelegramApiError, match="Unauthorized"):
            await run_telegram_poller(
                client=bad,
                store=store,
                ingest=wired.ingest,
                settings=telegram_settings(token="999:wrong"),
            )


async def test_network_errors_are_retried(tmp_path: Path) -> None:
    async with environment(tmp_path) as (fake, client, wired):
        fake.fail_next(
            "getUpdates", FakeTelegram.server_error(), FakeTelegram.too_many_requests(retry_after=9)
        )
        fake.add_update(fake.text_message(user_id=1, text="x"))
        async with poller(fake, client, wired) as p:
            await eventually(rows_at_least(wired.store, 1), "the update in the inbox")
        times = [c.at for c in fake.calls_to("getUpdates")]
        assert times[2] - times[1] >= 9  # retry_after honoured
        assert p.stats.errors == 2


async def test_webhook_is_registered_with_secret_and_retried_when_telegram_fails(
    tmp_path: Path,
) -> None:
    fake = FakeTelegram()
    fake.fail_next("setWebhook", FakeTelegram.server_error())
    settings = telegram_settings(
        token=fake.token,
        mode="webhook",
        webhook_url="https://bot.example/webhooks/telegram",
        webhook_secret="abc_DEF-123",
    )
    async with in_process_client(fake) as client, trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_telegram_webhook_setup(
                client=client, settings=settings, task_status=task_status
            )
        )
        await eventually(lambda: fake.webhook is not None, "the webhook to be registered")
        nursery.cancel_scope.cancel()
    assert fake.webhook is not None
    assert fake.webhook["secret_token"] == "abc_DEF-123"
    assert fake.webhook["allowed_updates"] == ["message"]
    assert fake.webhook["max_connections"] == 40
    assert fake.webhook["drop_pending_updates"] is False
    assert len(fake.calls_to("setWebhook")) == 2


async def test_refused_webhook_registration_raises() -> None:
    fake = FakeTelegram()
    settings = telegram_settings(
        token=fake.token,
        mode="webhook",
        webhook_url="https://bot.example/h",
        webhook_secret="bad secret!",
    )
    async with in_process_client(fake) as client:
        with pytest.raises(TelegramApiError, match="unallowed characters"):
            await run_telegram_webhook_setup(client=client, settings=settings)


@asynccontextmanager
async def typing_actor(fake: FakeTelegram, **kwargs: Any) -> AsyncIterator[PresenceBoard]:
    board = PresenceBoard()
    async with in_process_client(fake) as client, trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_telegram_typing(
                client=client, presence=board, task_status=task_status, **kwargs
            )
        )
        yield board
        nursery.cancel_scope.cancel()


def started(chat: int, cid: str) -> TurnStarted:
    return TurnStarted(channel=Channel.TELEGRAM, chat_id=str(chat), correlation_id=cid)


def ended(chat: int, cid: str) -> TurnEnded:
    return TurnEnded(channel=Channel.TELEGRAM, chat_id=str(chat), correlation_id=cid)


async def test_typing_is_repeated_every_five_seconds_until_the_turn_ends() -> None:
    fake = FakeTelegram()
    async with typing_actor(fake) as board:
        board.post(started(7, "t1"))
        await trio.sleep(12)
        board.post(ended(7, "t1"))
        await trio.sleep(30)
    times = [c.at for c in fake.actions]
    assert len(times) == 3  # at 0, 5 and 10 s
    assert all(b - a >= 5 for a, b in itertools.pairwise(times))
    assert all(c.params == {"chat_id": "7", "action": "typing"} for c in fake.actions)


async def test_typing_stops_at_the_cap_when_no_turn_end_comes() -> None:
    fake = FakeTelegram()
    async with typing_actor(fake, cap_s=20) as board:
        board.post(started(7, "t1"))
        await trio.sleep(600)
    assert len(fake.actions) == 4  # 0, 5, 10, 15


async def test_a_burst_of_turns_never_loses_a_turn_end() -> None:
    # Before, a full presence queue dropped "turn ended" and chats typed until the cap.
    fake = FakeTelegram()
    async with typing_actor(fake) as board:
        for chat in range(3000):
            board.post(started(chat, f"c{chat}"))
        await trio.sleep(2)  # the model works for 2 s
        for chat in range(3000):
            board.post(ended(chat, f"c{chat}"))
        await trio.sleep(300)
    assert len(fake.actions) == 3000  # one "typing..." per turn, none after its end
    assert len({c.params["chat_id"] for c in fake.actions}) == 3000


async def test_a_turn_that_ends_before_typing_is_shown_costs_no_call() -> None:
    fake = FakeTelegram()
    async with typing_actor(fake) as board:
        board.post(started(7, "t1"))
        board.post(ended(7, "t1"))
        await trio.sleep(30)
    assert fake.actions == []


async def test_a_new_turn_in_the_same_chat_waits_out_the_five_seconds() -> None:
    fake = FakeTelegram()
    async with typing_actor(fake) as board:
        board.post(started(7, "t1"))
        await trio.sleep(1)
        board.post(ended(7, "t1"))
        board.post(started(7, "t2"))
        await trio.sleep(2)
        board.post(ended(7, "t2"))  # before 5 s since t1's "typing...": no second call
        board.post(started(7, "t3"))
        await trio.sleep(10)
        board.post(ended(7, "t3"))
        await trio.sleep(30)
    times = [c.at for c in fake.actions]
    assert len(times) == 3  # t1 at 0; t3 at 5 and 10
    assert all(b - a >= 5 for a, b in itertools.pairwise(times))


def test_backoff_stays_capped_after_any_number_of_failures() -> None:
    backoff = PollBackoff(initial_s=1.0, max_s=60.0)
    assert backoff.delay_s(1) >= 1.0
    assert 60.0 <= backoff.delay_s(10_000) <= 66.0
