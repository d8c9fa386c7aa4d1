"""Telegram end to end over loopback HTTP: update in, conversation, outbox, reply out through the fake.

The real pieces (store, session cache, offline provider pool, conversations subtree,
outbox sender, Telegram sender, poller or webhook, typing) run in one nursery against
``FakeTelegram``; only the composition root is left out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import httpx
import httpx2
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from actors import (
    OutboxStats,
    PresenceBoard,
    ProviderPool,
    TelegramPollerStats,
    run_outbox_sender,
    run_telegram_poller,
    run_telegram_typing,
)
from concierge.app.conversations import build_conversations
from concierge.channels import TelegramClient, TelegramSender
from concierge.domain import Ingest
from concierge.protocol import Channel, CompletionRequest, Inbound, OutboxNudge
from concierge.providers import OfflineAdapter
from concierge.store import Store, open_session_cache, open_store
from tests import shipped
from tests.actors.harness import SUPERVISION, conversation_settings
from tests.channels.telegram_support import telegram_settings, webhook_app
from tests.fakes.telegram_api import FakeTelegram, WebhookPusher
from tests.providers.scripted import pool_settings
from tests.stores import store_settings
from tests.waiting import eventually, owes_nothing

pytestmark = pytest.mark.anyio


SECRET = "e2e_secret-" + "x" * 30
MEDIA_REPLY = "Je ne peux lire que du texte pour le moment"


@attrs.define
class Concierge:
    fake: FakeTelegram
    store: Store
    ingest: Ingest
    outbox: OutboxStats
    poller: TelegramPollerStats
    webhook_url: str | None = None


@asynccontextmanager
async def running(tmp_path: Path, *, mode: str) -> AsyncIterator[Concierge]:
    fake = FakeTelegram()
    settings = conversation_settings()
    knowledge = shipped.knowledge()
    pool = ProviderPool(
        adapters=[OfflineAdapter(knowledge, shipped.languages())],
        settings=pool_settings(turn_timeout_s=10.0),
    )
    async with (
        fake.serve(),
        open_store(store_settings(data_dir=tmp_path)) as store,
        open_session_cache(store_settings(data_dir=tmp_path)) as cache,
        httpx2.AsyncClient(timeout=60.0) as http,
    ):
        client = TelegramClient(token=fake.token, base_url=fake.url, http=http)
        router_send, router_receive = trio.open_memory_channel[Inbound](64)
        pool_send, pool_receive = trio.open_memory_channel[CompletionRequest](64)
        nudge_send, nudge_receive = trio.open_memory_channel[OutboxNudge](64)
        presence = PresenceBoard()
        service = build_conversations(
            settings=settings,
            supervision=SUPERVISION,
            store=store,
            cache=cache,
            languages=shipped.languages(),
            knowledge=knowledge,
            pool_inbox=pool_send,
            router_inbox=router_receive,
            router_send=router_send,
            outbox_nudges={Channel.TELEGRAM: nudge_send},
            presence={Channel.TELEGRAM: presence},
            replay_interval_s=3600.0,
        )
        ingest = Ingest(store=store, router=router_send)
        outbox_stats = OutboxStats(channel=Channel.TELEGRAM)
        poller_stats = TelegramPollerStats()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(pool.run, inbox=pool_receive))
            await nursery.start(service.supervisor.run)
            await nursery.start(
                partial(
                    run_outbox_sender,
                    sender=TelegramSender(client=client),
                    store=store,
                    nudges=nudge_receive,
                    stats=outbox_stats,
                )
            )
            await nursery.start(partial(run_telegram_typing, client=client, presence=presence))
            concierge = Concierge(
                fake=fake, store=store, ingest=ingest, outbox=outbox_stats, poller=poller_stats
            )
            if mode == "polling":
                await nursery.start(
                    partial(
                        run_telegram_poller,
                        client=client,
                        store=store,
                        ingest=ingest,
                        stats=poller_stats,
                        settings=telegram_settings(token=fake.token, poll_timeout_s=1),
                    )
                )
            else:
                app = webhook_app(ingest, secret=SECRET)
                config = Config()
                config.bind = ["127.0.0.1:0"]
                config.accesslog = None
                config.errorlog = None
                binds = await nursery.start(partial(serve, app, config))
                concierge.webhook_url = binds[0] + "/webhooks/telegram"
            yield concierge
            nursery.cancel_scope.cancel()


async def test_polling_mode_answers_text_and_media(tmp_path: Path) -> None:
    async with running(tmp_path, mode="polling") as c:
        c.fake.add_update(
            c.fake.text_message(user_id=501, text="Bonjour, à quelle heure est la messe dimanche ?")
        )
        c.fake.add_update(
            c.fake.text_message(user_id=502, text="", voice={"file_id": "v", "duration": 3})
        )
        await eventually(
            lambda: c.outbox.sent == 2, "the text and the media message to be answered"
        )
        [answer] = c.fake.texts_to(501)
        assert answer.strip()
        [media] = c.fake.texts_to(502)
        assert media.startswith(MEDIA_REPLY)
        assert c.poller.accepted == 2


async def test_webhook_mode_answers_each_update_once_despite_triple_delivery(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, mode="webhook") as c:
        assert c.webhook_url is not None
        updates = [c.fake.text_message(user_id=600 + i, text="Bonjour") for i in range(5)]
        updates.append(c.fake.text_message(user_id=700, text="", photo=[{"file_id": "p"}]))
        async with httpx.AsyncClient(timeout=10.0) as http:
            pusher = WebhookPusher(post=WebhookPusher.for_url(c.webhook_url, http), secret=SECRET)
            async with pusher.running():
                for update in updates:
                    for _ in range(3):
                        pusher.push(update)
                await pusher.drain()
        await eventually(lambda: c.outbox.sent == 6, "the six updates to be answered")
        await eventually(owes_nothing(c.store), "the store to owe no further reply")
        assert (c.ingest.accepted, c.ingest.duplicates) == (6, 12)
        for i in range(5):
            assert len(c.fake.texts_to(600 + i)) == 1
        [media] = c.fake.texts_to(700)
        assert media.startswith(MEDIA_REPLY)
        assert all(r.status == 200 for r in pusher.results)
        assert len(c.fake.sent) == 6
