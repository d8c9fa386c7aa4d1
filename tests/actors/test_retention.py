"""Retention: old message texts are erased on schedule, interaction metadata stays."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import trio

from actors import run_retention
from concierge.protocol import Channel, utcnow
from concierge.store import open_store
from tests.store.records import record_history
from tests.stores import store_settings

pytestmark = pytest.mark.anyio


async def test_texts_older_than_the_retention_are_erased_at_each_sweep(tmp_path: Path) -> None:
    send, receive = trio.open_memory_channel[int](4)
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        conv = await store.conversation_for(
            await store.resolve_user(Channel.TELEGRAM, "telegram:1")
        )
        await record_history(store, conv.conversation_id, ["Bonjour"], user="telegram:1")
        later = utcnow() + timedelta(days=91)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    run_retention,
                    store=store,
                    retention_days=90,
                    interval_s=3600,
                    now=lambda: later,
                    swept=send,
                )
            )
            with trio.fail_after(5):
                assert await receive.receive() == 2  # the message and its inbox row
            nursery.cancel_scope.cancel()
        assert await store.recent_turns(conv.conversation_id, limit=5) == []


async def test_recent_texts_are_kept(tmp_path: Path) -> None:
    send, receive = trio.open_memory_channel[int](4)
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        conv = await store.conversation_for(
            await store.resolve_user(Channel.TELEGRAM, "telegram:1")
        )
        await record_history(store, conv.conversation_id, ["Bonjour"], user="telegram:1")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_retention, store=store, retention_days=90, interval_s=3600, swept=send)
            )
            with trio.fail_after(5):
                assert await receive.receive() == 0
            nursery.cancel_scope.cancel()
        assert len(await store.recent_turns(conv.conversation_id, limit=5)) == 1


@pytest.mark.autojump
async def test_zero_days_keeps_texts_forever(tmp_path: Path) -> None:
    send, receive = trio.open_memory_channel[int](4)
    async with (
        open_store(store_settings(data_dir=tmp_path)) as store,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            partial(run_retention, store=store, retention_days=0, interval_s=1, swept=send)
        )
        await trio.sleep(10)
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()
        nursery.cancel_scope.cancel()
