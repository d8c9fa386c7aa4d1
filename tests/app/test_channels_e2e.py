"""The composed daemon answering through its channels, against loopback fakes of the platforms.

Each test builds the real tree (SQLite store, memory cache, offline provider,
conversations, outbox, listeners, HTTP app on a loopback port) the way
``concierge run`` does, with the Telegram or WAHA fake standing in for the platform.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from concierge.app.runtime import Runtime
from tests.app.running import daemon_settings, running_daemon
from tests.fakes.telegram_api import FakeTelegram, WebhookPusher
from tests.fakes.waha_api import FakeWaha, RetryPolicy, WahaWebhookPusher, message_event
from tests.waiting import eventually, owes_nothing

pytestmark = pytest.mark.anyio

SECRET = "s3cret-token_for-the-webhook"
HMAC_KEY = "my-secret-key"


@asynccontextmanager
async def daemon(tmp_path: Path, **env: str) -> AsyncIterator[Runtime]:
    async with running_daemon(daemon_settings(tmp_path, **env)) as rt:
        yield rt


async def test_polling_mode_answers_a_private_message(tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with (
        fake.serve(),
        daemon(
            tmp_path,
            TELEGRAM_BOT_TOKEN=fake.token,
            TELEGRAM_API_BASE_URL=fake.url,
            TELEGRAM_POLL_TIMEOUT_S="1",
        ) as rt,
    ):
        fake.add_update(
            fake.text_message(user_id=111111111, text="A quelle heure est la messe dimanche ?")
        )
        await eventually(lambda: bool(fake.texts_to(111111111)), "a reply to the private message")
        (reply,) = fake.texts_to(111111111)
        assert "10h30" in reply
        await eventually(lambda: fake.pending_update_count == 0, "every update to be fetched")
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{rt.http_binds[0]}/health")).json()
        assert health["status"] in {"pass", "warn"}


async def test_webhook_mode_registers_and_answers_once_despite_redelivery(tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with (
        fake.serve(),
        daemon(
            tmp_path,
            TELEGRAM_BOT_TOKEN=fake.token,
            TELEGRAM_API_BASE_URL=fake.url,
            TELEGRAM_MODE="webhook",
            TELEGRAM_WEBHOOK_URL="https://concierge.example.org/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET=SECRET,
        ) as rt,
    ):
        await eventually(lambda: fake.webhook is not None, "the webhook to be registered")
        assert fake.webhook is not None
        assert fake.webhook["secret_token"] == SECRET
        url = f"{rt.http_binds[0]}/webhooks/telegram"
        async with httpx.AsyncClient() as client:
            pusher = WebhookPusher(post=WebhookPusher.for_url(url, client), secret=SECRET)
            update = fake.text_message(
                user_id=222222222, text="What time is mass on Sunday?", language_code="en"
            )
            async with pusher.running():
                for _ in range(3):
                    pusher.push(update)
                await pusher.drain()
            assert [r.status for r in pusher.results] == [200, 200, 200]
            forged = await client.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}
            )
            assert forged.status_code == 403
            metrics = (await client.get(f"{rt.http_binds[0]}/metrics")).text
        # Telegram's webhook is counted with every other route, as WAHA's is.
        assert (
            'concierge_http_requests_total{method="POST",route="/webhooks/telegram",status="200"} 3.0'
            in metrics
        )
        assert (
            'concierge_http_requests_total{method="POST",route="/webhooks/telegram",status="403"} 1.0'
            in metrics
        )
        await eventually(lambda: bool(fake.texts_to(222222222)), "a reply to the webhook update")
        await eventually(owes_nothing(rt.store), "the store to owe no further reply")
        assert (rt.ingest.accepted, rt.ingest.duplicates) == (1, 2)
        assert len(fake.texts_to(222222222)) == 1


async def test_waha_answers_a_signed_message_and_refuses_a_forged_one(tmp_path: Path) -> None:
    async with (
        FakeWaha.serve(api_key="waha-test-key") as fake,
        daemon(
            tmp_path,
            WAHA_URL=fake.url,
            WAHA_API_KEY="waha-test-key",
            WAHA_WEBHOOK_HMAC_KEY=HMAC_KEY,
            WAHA_TYPING_MAX_S="0",
        ) as rt,
    ):
        url = f"{rt.http_binds[0]}/webhooks/waha"
        async with httpx.AsyncClient() as client:
            forger = WahaWebhookPusher.over_http(
                client, url, hmac_key="not-the-key", policy=RetryPolicy(attempts=1)
            )
            forged = await forger.deliver(
                message_event(chat_id="221770000001@c.us", text="Bonjour")
            )
            assert not forged.delivered
            pusher = WahaWebhookPusher.over_http(
                client, url, hmac_key=HMAC_KEY, policy=RetryPolicy(attempts=3)
            )
            event = message_event(
                chat_id="221770000002@c.us", text="A quelle heure est la messe dimanche ?"
            )
            delivery = await pusher.deliver(event)
            assert delivery.delivered
            assert (
                await pusher.deliver(event)
            ).delivered  # a redelivery is acknowledged, not answered
        await eventually(lambda: bool(fake.texts()), "a reply through WAHA")
        await eventually(owes_nothing(rt.store), "the store to owe no further reply")
        (reply,) = fake.texts()
        assert "10h30" in reply
        endpoints = [endpoint for endpoint, _ in fake.calls()]
        assert (
            endpoints.index("sendSeen")
            < endpoints.index("startTyping")
            < endpoints.index("sendText")
        )
        assert all(chat != "221770000001@c.us" for _, chat in fake.calls())
