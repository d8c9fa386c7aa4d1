"""Shared wiring for the Telegram and outbox tests: a real SQLite store, an ingest, a client."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import httpx2
import trio
import trio_asyncio

from concierge.app.http import create_app
from concierge.channels import ASGIApp, TelegramClient, TelegramWebhookStats, with_telegram_webhook
from concierge.domain import Ingest
from concierge.observability import HealthBoard
from concierge.protocol import Inbound
from concierge.settings import HttpSettings, TelegramSettings
from concierge.store import Store, migrate, open_store
from concierge.store.postgres import execute_admin
from tests.fakes.telegram_api import FakeTelegram
from tests.stores import store_settings


def telegram_settings(
    *,
    token: str,
    mode: str = "polling",
    poll_timeout_s: int = 50,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> TelegramSettings:
    return TelegramSettings(
        bot_token=token,
        mode=mode,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        api_base_url="http://fake-telegram",
        poll_timeout_s=poll_timeout_s,
        max_connections=40,
    )


HTTP = HttpSettings(
    host="127.0.0.1", port=0, max_body_bytes=1 << 20, read_timeout_s=5, graceful_timeout_s=1
)


def webhook_app(
    ingest: Ingest,
    *,
    secret: str,
    previous_secrets: tuple[str, ...] = (),
    stats: TelegramWebhookStats | None = None,
) -> ASGIApp:
    """The daemon's HTTP app with the webhook route in front of it, as ``concierge run`` serves it."""
    return with_telegram_webhook(
        create_app(board=HealthBoard(version="test"), settings=HTTP),
        ingest=ingest,
        secret=secret,
        previous_secrets=previous_secrets,
        stats=stats,
        max_body_bytes=HTTP.max_body_bytes,
    )


@attrs.define
class Wired:
    """An ``Ingest`` whose router side the test reads (``forwarded``)."""

    store: Store
    ingest: Ingest
    forwarded: list[Inbound]
    router_send: trio.MemorySendChannel[Inbound]


@asynccontextmanager
async def wired_ingest(store: Store) -> AsyncIterator[Wired]:
    """An ingest whose router is drained into a list by a background task."""
    send, receive = trio.open_memory_channel[Inbound](100)
    forwarded: list[Inbound] = []

    async def drain() -> None:
        async for message in receive:
            forwarded.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        with send:
            yield Wired(
                store=store,
                ingest=Ingest(store=store, router=send),
                forwarded=forwarded,
                router_send=send,
            )
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def in_process_client(fake: FakeTelegram) -> AsyncIterator[TelegramClient]:
    """A client talking to ``fake`` without sockets (deterministic on trio's MockClock)."""
    async with httpx2.AsyncClient(transport=fake.transport()) as http:
        yield TelegramClient(token=fake.token, base_url="http://fake-telegram", http=http)


def trio_wallclock() -> Callable[[], datetime]:
    """A wall clock that follows trio's clock, so MockClock jumps move it too.

    It starts a day ahead of the real clock, so rows the store stamps with the real
    time are due at once; retry instants come from this clock and compare with it.
    """
    base = datetime.now(UTC) + timedelta(days=1)
    offset = trio.current_time()
    return lambda: base + timedelta(seconds=trio.current_time() - offset)


PG_DSN = os.environ.get("CONCIERGE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def postgres_store(data_dir: Path) -> AsyncIterator[Store]:
    """A migrated store in a fresh schema of the test database (inside a trio-asyncio loop)."""
    schema = f"tg_{secrets.token_hex(5)}"
    async with trio_asyncio.open_loop():
        await execute_admin(PG_DSN, f"CREATE SCHEMA {schema}")
        try:
            settings = store_settings(
                data_dir=data_dir, database_url=f"{PG_DSN}?search_path={schema}", pool_size=2
            )
            await migrate(settings)
            async with open_store(settings) as store:
                yield store
        finally:
            with trio.CancelScope(shield=True):
                await execute_admin(PG_DSN, f"DROP SCHEMA {schema} CASCADE")


def rows_at_least(store: Store, count: int) -> Callable[[], Awaitable[bool]]:
    """A condition: the inbox holds at least ``count`` unprocessed rows."""

    async def check() -> bool:
        return len(await store.pending_inbox()) >= count

    return check
