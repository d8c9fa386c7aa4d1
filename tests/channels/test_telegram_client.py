"""The Bot API client: parameters it sends and how each kind of answer becomes an error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
import structlog

from concierge.channels import TelegramApiError, TelegramClient
from concierge.channels.telegram_client import TelegramNetworkError
from tests.fakes.telegram_api import ApiFailure, FakeTelegram

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    async with fake.serve():
        yield fake


@pytest.fixture
async def client(fake: FakeTelegram) -> AsyncIterator[TelegramClient]:
    async with httpx2.AsyncClient(timeout=5.0) as http:
        yield TelegramClient(token=fake.token, base_url=fake.url, http=http)


async def test_get_updates_sends_offset_allowed_updates_and_a_clamped_timeout(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    fake.add_update(fake.text_message(user_id=1, text="x"))
    updates = await client.get_updates(offset=5, timeout_s=90)
    assert len(updates) == 1
    [call] = fake.calls_to("getUpdates")
    assert call.params == {"offset": 5, "timeout": 50, "limit": 100, "allowed_updates": ["message"]}


async def test_proxy_error_page_is_a_transient_api_error(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    fake.fail_next(
        "sendMessage", ApiFailure(status=502, description="", html="<html>Bad Gateway</html>")
    )
    with pytest.raises(TelegramApiError) as caught:
        await client.send_message(chat_id="1", text="x")
    assert caught.value.status == 502
    assert caught.value.is_transient
    assert "without a JSON object" in caught.value.description


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    async with httpx2.AsyncClient(timeout=5.0) as http:
        client = TelegramClient(token="42:nope", base_url=fake.url, http=http)
        with pytest.raises(TelegramApiError) as caught:
            await client.get_webhook_info()
    assert caught.value.is_unauthorized
    assert "42:nope" not in str(caught.value)


async def test_conflict_and_flood_wait_are_recognised(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    fake.webhook = {"url": "https://x.example/h"}
    with pytest.raises(TelegramApiError) as conflict:
        await client.get_updates(offset=None, timeout_s=0)
    assert conflict.value.is_conflict
    fake.fail_next("sendMessage", FakeTelegram.too_many_requests(retry_after=12))
    with pytest.raises(TelegramApiError) as flood:
        await client.send_message(chat_id="1", text="x")
    assert flood.value.retry_after_s == 12


async def test_dropping_pending_updates_must_be_asked_for_and_is_logged(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    with structlog.testing.capture_logs() as logs:
        await client.delete_webhook(drop_pending_updates=False)
        await client.delete_webhook(drop_pending_updates=True)
    assert [c.params["drop_pending_updates"] for c in fake.calls_to("deleteWebhook")] == [
        False,
        True,
    ]
    assert [e["event"] for e in logs] == ["telegram.pending_updates_dropped"]


async def test_unreachable_server_is_a_network_error() -> None:
    async with httpx2.AsyncClient(timeout=2.0) as http:
        client = TelegramClient(token="1:abc", base_url="http://127.0.0.1:9", http=http)
        with pytest.raises(TelegramNetworkError, match="getWebhookInfo"):
            await client.get_webhook_info()


@pytest.mark.parametrize("token", ["", "1:a/b", "1: ab"])
def test_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="TELEGRAM_BOT_TOKEN"):
        TelegramClient(token=token)
