"""The outbox sender's per-user order on PostgreSQL, whose due query may return several rows of a user."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from actors import OutboxStats, Pacing, run_outbox_sender
from concierge.channels import TelegramSender
from concierge.protocol import Channel, OutboundReply, OutboxNudge
from concierge.store import Store
from tests.channels.telegram_support import in_process_client, postgres_store
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

FAST = Pacing(per_chat_interval_s=0.01, backoff_initial_s=0.05, backoff_max_s=0.2)


async def enqueue(store: Store, chat: int, text: str) -> None:
    await store.enqueue_reply(
        OutboundReply(
            correlation_id=f"c{chat}",
            channel=Channel.TELEGRAM,
            user_key=f"telegram:{chat}",
            chat_id=str(chat),
            text=text,
        )
    )


async def test_per_user_order_holds_on_postgres_with_failures(tmp_path: Path) -> None:
    rng = random.Random(3)
    fake = FakeTelegram()
    fake.fail_next("sendMessage", *[FakeTelegram.server_error() for _ in range(30)])
    stats = OutboxStats(channel=Channel.TELEGRAM)
    async with postgres_store(tmp_path) as store, in_process_client(fake) as client:
        send, receive = trio.open_memory_channel[OutboxNudge](8)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_outbox_sender(
                    sender=TelegramSender(client=client),
                    store=store,
                    nudges=receive,
                    pacing=FAST,
                    poll_interval_s=0.2,
                    stats=stats,
                )
            )
            for i in range(10):
                for user in rng.sample(range(20), 20):
                    await enqueue(store, 4000 + user, f"{user}:{i}")
                await send.send(OutboxNudge(channel=Channel.TELEGRAM))
            await eventually(lambda: stats.sent == 200, "all 200 rows to be sent")
            nursery.cancel_scope.cancel()
        send.close()
    for user in range(20):
        assert fake.texts_to(4000 + user) == [f"{user}:{i}" for i in range(10)]
    assert stats.retries == 30
