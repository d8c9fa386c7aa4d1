"""The WAHA sender driven by the outbox actor: durable rows reach the fake WAHA, retried after a 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from actors import OutboxStats, Pacing, run_outbox_sender
from concierge.channels import WahaClient, WahaPacing, WahaSender
from concierge.protocol import Channel, OutboundReply, OutboxNudge
from concierge.store import Store
from tests.fakes.waha_api import FakeWaha
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

CHAT = "33612345678@c.us"
FAST = Pacing(
    per_chat_interval_s=0.0, global_rate_per_s=1000.0, global_burst=100, backoff_initial_s=0.05
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with sqlite_store(tmp_path) as opened:
        yield opened


async def test_the_outbox_actor_delivers_a_split_reply_through_waha(
    store: Store, fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    text = "\n\n".join(
        f"Partie {i}. " + "La messe est célébrée à dix heures. " * 8 for i in range(1, 4)
    )
    sender = WahaSender(client=waha_client, pacing=WahaPacing(typing_max_s=0.0, max_part_chars=400))
    stats = OutboxStats(channel=Channel.WAHA)
    fake_waha.push(FakeWaha.rate_limited(retry_after_s=0.05))  # the first sendText is throttled
    nudge_send, nudge_receive = trio.open_memory_channel[OutboxNudge](8)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_outbox_sender,
                sender=sender,
                store=store,
                nudges=nudge_receive,
                pacing=FAST,
                stats=stats,
                poll_interval_s=0.05,
            )
        )
        await store.enqueue_reply(
            OutboundReply(
                correlation_id="cid-1",
                channel=Channel.WAHA,
                user_key=f"waha:{CHAT}",
                chat_id=CHAT,
                text=text,
            )
        )
        nudge_send.send_nowait(OutboxNudge(channel=Channel.WAHA, correlation_id="cid-1"))
        await eventually(lambda: stats.sent == 1, "the split reply to be delivered")
        nursery.cancel_scope.cancel()
    parts = sender.parts_of(text)
    assert len(parts) > 1
    assert fake_waha.texts() == [parts[0], *parts]  # the throttled first part, then every part once
    assert stats.retries == 1
    assert await store.pending_outbox(Channel.WAHA) == []
