"""POST /webhooks/telegram: secret first, inbox row before 200, 503 when the store is down.

The route is the one the daemon serves: ``with_telegram_webhook`` in front of its HTTP app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from concierge.channels import ASGIApp, TelegramWebhookStats
from concierge.domain import Ingest
from concierge.protocol import Accepted, InboundKind, InboundMessage
from concierge.store import Store, StoreUnavailable
from tests.channels.telegram_support import Wired, webhook_app, wired_ingest
from tests.fakes.telegram_api import FakeTelegram, WebhookPusher
from tests.stores import sqlite_store

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t_Token-" + "A" * 40
PATH = "/webhooks/telegram"


def make_app(ingest: Ingest, stats: TelegramWebhookStats | None = None) -> ASGIApp:
    return webhook_app(ingest, secret=SECRET, stats=stats)


def client_of(app: ASGIApp) -> httpx.AsyncClient:
    """An HTTP client calling ``app`` in process (no socket to close)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://concierge")


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[Wired]:
    async with sqlite_store(tmp_path) as store, wired_ingest(store) as wired:
        yield wired


async def inbox_count(store: Store) -> int:
    return len(await store.pending_inbox())


def body_of(update: dict[str, Any]) -> bytes:
    return json.dumps(update).encode()


async def test_signed_update_is_committed_then_acknowledged(wired: Wired) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    update = FakeTelegram().text_message(user_id=42, text="Bonjour")
    response = await client.post(
        PATH,
        content=body_of(update),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    [row] = await wired.store.pending_inbox()
    assert row.external_id == str(update["update_id"])
    assert row.user_key == "telegram:42"
    await trio.testing.wait_all_tasks_blocked()
    assert [m.inbox_id for m in wired.forwarded] == [row.inbox_id]
    assert stats.accepted == 1


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("", 403),
        ("wrong", 403),
        (SECRET[:-1] + "B", 403),  # right prefix, wrong suffix
        (SECRET[:-1], 403),  # one character short
        (SECRET + "A", 403),  # one character long
        (SECRET.upper(), 403),  # different case
        (SECRET.lower(), 403),
        ("A" * 257, 403),
        (SECRET + " ", 403),
        ("é" + SECRET[1:], 403),
    ],
)
async def test_wrong_missing_and_near_miss_secrets_are_refused_without_a_row(
    wired: Wired, header: str | None, status: int
) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    # UTF-8 on the wire, as a client would send a non-ASCII value
    headers: dict[bytes, bytes] = {}
    if header is not None:
        headers[b"X-Telegram-Bot-Api-Secret-Token"] = header.encode()
    update = FakeTelegram().text_message(user_id=42, text="Bonjour")
    response = await client.post(PATH, content=body_of(update), headers=headers)
    assert response.status_code == status
    assert await inbox_count(wired.store) == 0
    assert stats.unauthorized == 1


async def test_secret_is_checked_before_the_body_is_parsed(wired: Wired) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    response = await client.post(
        PATH,
        content=b"{not json",
        headers={"X-Telegram-Bot-Api-Secret-Token": "x", "Content-Type": "application/json"},
    )
    assert response.status_code == 403
    assert stats.malformed == 0


async def test_previous_secret_is_accepted_during_rotation(wired: Wired) -> None:
    client = client_of(webhook_app(wired.ingest, secret="new", previous_secrets=("old",)))
    for i, secret in enumerate(("new", "old")):
        update = FakeTelegram().text_message(user_id=42, text="x", update_id=10 + i)
        response = await client.post(
            PATH,
            content=body_of(update),
            headers={"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"},
        )
        assert response.status_code == 200
    assert await inbox_count(wired.store) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"message": {}}', "update_id"),
    ],
)
async def test_malformed_body_is_a_clear_400_and_nothing_is_stored(
    wired: Wired, body: bytes, problem: str
) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    response = await client.post(
        PATH,
        content=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = json.loads(response.content)["error"]
    assert error.startswith("not a Telegram Update")
    assert problem in error
    assert await inbox_count(wired.store) == 0
    assert stats.malformed == 1


async def test_ignored_updates_are_acknowledged_and_counted(wired: Wired) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    fake = FakeTelegram()
    updates = [
        fake.text_message(user_id=1, text="edit", field="edited_message"),
        fake.text_message(user_id=1, chat_id=-5, chat_type="group", text="hi"),
        {"update_id": 77, "callback_query": {"id": "1"}},
    ]
    for update in updates:
        response = await client.post(
            PATH,
            content=body_of(update),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
        )
        assert response.status_code == 200
    assert await inbox_count(wired.store) == 0
    assert stats.ignored == {"edited_message": 1, "not_private_chat": 1, "callback_query": 1}


async def test_media_update_is_stored_as_media(wired: Wired) -> None:
    client = client_of(make_app(wired.ingest, TelegramWebhookStats()))
    update = FakeTelegram().text_message(user_id=3, text="", voice={"file_id": "v"})
    response = await client.post(
        PATH,
        content=body_of(update),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    [row] = await wired.store.pending_inbox()
    assert row.kind is InboundKind.MEDIA


async def test_update_delivered_three_times_makes_one_row_sequentially_and_concurrently(
    wired: Wired,
) -> None:
    stats = TelegramWebhookStats()
    client = client_of(make_app(wired.ingest, stats))
    fake = FakeTelegram()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    sequential = fake.text_message(user_id=7, text="un")
    concurrent = fake.text_message(user_id=8, text="deux")
    statuses: list[int] = []
    for _ in range(3):
        statuses.append(
            (await client.post(PATH, content=body_of(sequential), headers=headers)).status_code
        )

    async def post() -> None:
        statuses.append(
            (await client.post(PATH, content=body_of(concurrent), headers=headers)).status_code
        )

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(post)
    assert statuses == [200] * 6
    rows = await wired.store.pending_inbox()
    assert sorted(r.external_id for r in rows) == sorted(
        [str(sequential["update_id"]), str(concurrent["update_id"])]
    )
    await trio.testing.wait_all_tasks_blocked()
    assert len(wired.forwarded) == 2  # each reaches a conversation once
    assert (stats.accepted, stats.duplicates) == (2, 4)


async def test_store_down_answers_503_with_retry_after_and_commits_nothing(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as store, wired_ingest(store) as wired:
        stats = TelegramWebhookStats()
        client = client_of(make_app(wired.ingest, stats))
        await store.aclose()  # every call now raises StoreUnavailable
        update = FakeTelegram().text_message(user_id=42, text="Bonjour")
        response = await client.post(
            PATH,
            content=body_of(update),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert stats.unavailable == 1
        assert wired.forwarded == []


@pytest.fixture
async def served(wired: Wired) -> AsyncIterator[tuple[str, TelegramWebhookStats]]:
    stats = TelegramWebhookStats()
    app = make_app(wired.ingest, stats)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config))
        yield binds[0] + PATH, stats
        nursery.cancel_scope.cancel()


async def test_pushed_updates_arrive_once_each_in_chat_order_over_http(
    wired: Wired, served: tuple[str, TelegramWebhookStats]
) -> None:
    url, stats = served
    fake = FakeTelegram()
    updates = [fake.text_message(user_id=100 + i % 5, text=f"m{i}") for i in range(40)]
    async with httpx.AsyncClient(timeout=5.0) as http:
        pusher = WebhookPusher(post=WebhookPusher.for_url(url, http), secret=SECRET)
        async with pusher.running():
            for update in updates:
                for _ in range(3):  # every update delivered three times
                    pusher.push(update)
            await pusher.drain()
    assert all(r.status == 200 for r in pusher.results)
    rows = await wired.store.pending_inbox()
    assert sorted(int(r.external_id) for r in rows) == sorted(u["update_id"] for u in updates)
    for user in range(100, 105):
        mine = [r.text for r in rows if r.user_key == f"telegram:{user}"]
        assert mine == [f"m{i}" for i in range(40) if 100 + i % 5 == user]
    assert stats.duplicates == 80


async def test_pusher_retries_a_refused_delivery_until_the_secret_is_right(
    wired: Wired, served: tuple[str, TelegramWebhookStats]
) -> None:
    url, _ = served
    fake = FakeTelegram()
    update = fake.text_message(user_id=9, text="hello")
    async with httpx.AsyncClient(timeout=5.0) as http:
        pusher = WebhookPusher(
            post=WebhookPusher.for_url(url, http), secret="wrong", max_attempts=3
        )
        async with pusher.running():
            pusher.push(update)
            await pusher.drain()
    assert pusher.statuses == [403, 403, 403]
    assert await inbox_count(wired.store) == 0


class FlakyStore:
    """The real store, except that the first ``failures`` inbox writes find it unavailable."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def accept(self, message: InboundMessage) -> Accepted:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database is restarting")
        return await self._store.accept(message)


async def test_update_refused_with_503_arrives_once_after_the_store_recovers(wired: Wired) -> None:
    flaky = FlakyStore(wired.store, failures=2)
    ingest = Ingest(store=flaky, router=wired.router_send)
    stats = TelegramWebhookStats()
    client = client_of(make_app(ingest, stats))

    async def post(body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        response = await client.post(PATH, content=body, headers=dict(headers))
        return response.status_code, dict(response.headers)

    pusher = WebhookPusher(post=post, secret=SECRET)
    async with pusher.running():
        pusher.push(FakeTelegram().text_message(user_id=5, text="pendant la panne"))
        await pusher.drain()
    assert pusher.statuses == [503, 503, 200]
    assert await inbox_count(wired.store) == 1
    assert stats.unavailable == 2


async def test_text_with_nul_and_lone_surrogates_is_stored_cleaned(wired: Wired) -> None:
    client = client_of(make_app(wired.ingest, TelegramWebhookStats()))
    update = FakeTelegram().text_message(user_id=4, text="a\x00b\ud800c", first_name="\ud83d")
    body = json.dumps(update).encode()  # JSON escapes carry the lone surrogates
    response = await client.post(
        PATH,
        content=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    [row] = await wired.store.pending_inbox()
    assert row.text == "ab?c"
    assert row.display_name == "?"
