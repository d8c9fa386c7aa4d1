"""The poller's offset cursor and inbox on PostgreSQL: a restart neither loses nor replays."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from actors import TelegramPollerStats, run_telegram_poller
from actors.telegram import OFFSET_CURSOR
from tests.channels.telegram_support import (
    in_process_client,
    postgres_store,
    telegram_settings,
    wired_ingest,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_restart_on_postgres_neither_loses_nor_replays(tmp_path: Path) -> None:
    fake = FakeTelegram()
    settings = telegram_settings(token=fake.token, poll_timeout_s=1)
    async with (
        postgres_store(tmp_path) as store,
        wired_ingest(store) as wired,
        in_process_client(fake) as client,
    ):
        for run, texts in enumerate((["a", "b", "c"], ["d", "e"])):
            updates = [fake.text_message(user_id=9, text=t) for t in texts]
            for update in updates:
                fake.add_update(update)
            stats = TelegramPollerStats()
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        run_telegram_poller,
                        client=client,
                        store=store,
                        ingest=wired.ingest,
                        settings=settings,
                        stats=stats,
                    )
                )
                await eventually(
                    lambda: stats.offset == updates[-1]["update_id"] + 1,  # noqa: B023
                    "the offset to move past this run's updates",
                )
                nursery.cancel_scope.cancel()
            assert (stats.accepted, stats.duplicates) == (len(texts), 0), f"run {run}"
        assert await store.get_cursor(OFFSET_CURSOR) == str(updates[-1]["update_id"] + 1)
        assert [r.text for r in await store.pending_inbox()] == ["a", "b", "c", "d", "e"]
