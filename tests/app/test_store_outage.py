"""PostgreSQL going away under the running daemon: refuse with 503, never ack without a row, recover."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from concierge.store import migrate
from tests.app.running import daemon_settings, running_daemon
from tests.fakes.telegram_api import FakeTelegram
from tests.pgserver import PrivatePostgres, available
from tests.waiting import eventually

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="PostgreSQL server binaries are not installed"),
]

SECRET = "outage-test-secret"


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def answers(
    client: httpx.AsyncClient, method: str, url: str, status: int, **request: Any
) -> Callable[[], Awaitable[bool]]:
    """A condition: a request made now gets ``status`` back."""

    async def check() -> bool:
        return (await client.request(method, url, **request)).status_code == status

    return check


async def test_postgres_outage_gives_503_then_the_backlog_drains(
    tmp_path: Path, postgres: PrivatePostgres
) -> None:
    telegram = FakeTelegram()
    async with telegram.serve():
        settings = daemon_settings(
            tmp_path,
            DATABASE_URL=postgres.dsn,
            CONCIERGE_DB_COMMAND_TIMEOUT_S="2",
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE_URL=telegram.url,
            TELEGRAM_MODE="webhook",
            TELEGRAM_WEBHOOK_URL="https://concierge.example.org/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET=SECRET,
        )
        async with trio_asyncio.open_loop():
            await migrate(settings.store)
        async with running_daemon(settings) as rt, httpx.AsyncClient(timeout=10) as client:
            base = rt.http_binds[0]
            hook = f"{base}/webhooks/telegram"
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}

            before = telegram.text_message(
                user_id=333, text="A quelle heure est la messe dimanche ?"
            )
            assert (await client.post(hook, json=before, headers=headers)).status_code == 200

            await trio.to_thread.run_sync(postgres.stop)
            during = telegram.text_message(
                user_id=444, text="Quels sont les horaires du secrétariat ?"
            )
            refused = await client.post(hook, json=during, headers=headers)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"]
            await eventually(
                answers(client, "GET", f"{base}/readyz", 503),
                "readiness to fail",
                step_s=0.2,
            )
            # Readiness may fail first for another reason (an actor restarting on the
            # outage); the store's own check fails by its next ping.
            await eventually(
                answers(client, "GET", f"{base}/health", 503), "the store check to fail", step_s=0.2
            )
            health = await client.get(f"{base}/health")
            assert health.json()["checks"]["postgres:responseTime"][0]["status"] == "fail"
            assert (await client.get(f"{base}/livez")).status_code == 200

            await trio.to_thread.run_sync(postgres.start)
            await eventually(
                answers(client, "POST", hook, 200, json=during, headers=headers),
                "the refused update to be accepted on redelivery",
                step_s=0.2,
            )
            await eventually(
                answers(client, "GET", f"{base}/readyz", 200), "readiness back", step_s=0.2
            )
            await eventually(
                lambda: bool(telegram.texts_to(333) and telegram.texts_to(444)),
                "both users to be answered",
            )
            assert "10h30" in telegram.texts_to(333)[0]
