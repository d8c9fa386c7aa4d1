"""The webhook answered in bare ASGI in front of the app, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio
from structlog.testing import capture_logs

from concierge.channels import TelegramWebhookStats, with_telegram_webhook
from concierge.domain import Ingest
from tests.channels.telegram_support import Wired, wired_ingest
from tests.fakes.telegram_api import FakeTelegram
from tests.stores import sqlite_store

pytestmark = pytest.mark.anyio

SECRET = "asgi_Secret-" + "z" * 30
HEADER = "X-Telegram-Bot-Api-Secret-Token"
JSON = "application/json"


@attrs.define
class Served:
    url: str
    stats: TelegramWebhookStats
    wired: Wired
    http: httpx.AsyncClient
    observed: list[tuple[str, str, int]]


@asynccontextmanager
async def serving(
    ingest: Ingest, wired: Wired, *, max_body_bytes: int = 4096, body_timeout_s: float = 10.0
) -> AsyncIterator[Served]:
    app = QuartTrio("inner")

    @app.get("/livez")
    async def livez() -> str:
        return "alive"

    stats = TelegramWebhookStats()
    observed: list[tuple[str, str, int]] = []
    asgi = with_telegram_webhook(
        app,
        ingest=ingest,
        secret=SECRET,
        stats=stats,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        observe=lambda route, method, status, _s: observed.append((route, method, status)),
    )
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10.0) as http:
        binds = await nursery.start(partial(serve, asgi, config))
        yield Served(url=binds[0], stats=stats, wired=wired, http=http, observed=observed)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with (
        sqlite_store(tmp_path) as store,
        wired_ingest(store) as wired,
        serving(wired.ingest, wired) as s,
    ):
        yield s


async def post(
    s: Served, body: bytes, secret: str | None = SECRET, content_type: str | None = JSON
) -> httpx.Response:
    headers = {} if secret is None else {HEADER: secret}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await s.http.post(s.url + "/webhooks/telegram", content=body, headers=headers)


def update(user_id: int = 42, text: str = "Bonjour") -> bytes:
    return json.dumps(FakeTelegram().text_message(user_id=user_id, text=text)).encode()


async def test_signed_update_is_committed_then_acknowledged(served: Served) -> None:
    response = await post(served, update())
    assert response.status_code == 200
    assert response.content == b""
    assert len(await served.wired.store.pending_inbox()) == 1
    assert served.stats.accepted == 1


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 401), ("", 403), (SECRET[:-1] + "Z", 403), (SECRET.upper(), 403), ("a" * 257, 403)],
)
async def test_missing_and_wrong_secrets_are_refused_without_a_row(
    served: Served, secret: str | None, status: int
) -> None:
    response = await post(served, update(), secret)
    assert response.status_code == status
    assert "X-Telegram-Bot-Api-Secret-Token" in response.json()["error"]
    assert await served.wired.store.pending_inbox() == []


async def test_triple_concurrent_delivery_makes_one_row(served: Served) -> None:
    body = update()
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await post(served, body)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert statuses == [200, 200, 200]
    assert len(await served.wired.store.pending_inbox()) == 1
    assert (served.stats.accepted, served.stats.duplicates) == (1, 2)


async def test_malformed_body_is_400(served: Served) -> None:
    response = await post(served, b"{oops")
    assert response.status_code == 400
    assert response.json()["error"].startswith("not a Telegram Update: the body is not valid JSON")


async def test_oversized_body_is_413_and_stores_nothing(served: Served) -> None:
    response = await post(served, update(text="x" * 10_000))
    assert response.status_code == 413
    assert await served.wired.store.pending_inbox() == []


async def test_other_routes_and_methods(served: Served) -> None:
    assert (await served.http.get(served.url + "/livez")).text == "alive"
    wrong = await served.http.get(served.url + "/webhooks/telegram")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


async def test_store_down_is_503_with_retry_after(tmp_path: Path) -> None:
    async with (
        sqlite_store(tmp_path) as store,
        wired_ingest(store) as wired,
        serving(wired.ingest, wired) as s,
    ):
        await store.aclose()
        response = await post(s, update())
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"


async def test_answers_are_counted_and_timed_for_metrics(served: Served) -> None:
    await post(served, update())
    await post(served, update(), secret="wrong")
    families = {m.name: m for m in served.stats.metrics()}
    outcomes = {
        tuple(s.labels.values()): s.value
        for s in families["concierge_telegram_webhook_updates"].samples
    }
    assert outcomes[("accepted", "")] == 1
    assert outcomes[("unauthorized", "")] == 1
    count = next(
        s
        for s in families["concierge_telegram_webhook_duration_seconds"].samples
        if s.name.endswith("_count")
    )
    assert count.value == 2
    [check] = served.stats.health_checks()
    assert check.key == "telegram:webhook"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_declared_json_is_415_and_stores_nothing(
    served: Served, content_type: str | None
) -> None:
    response = await post(served, update(), content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"] == "the body must be application/json"
    assert await served.wired.store.pending_inbox() == []
    assert (await post(served, update(), content_type="Application/JSON; charset=utf-8")).is_success


async def test_a_trickled_body_gets_408_and_the_connection_is_closed(tmp_path: Path) -> None:
    async with (
        sqlite_store(tmp_path) as store,
        wired_ingest(store) as wired,
        serving(wired.ingest, wired, body_timeout_s=0.3) as s,
    ):
        host, port = s.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /webhooks/telegram HTTP/1.1\r\nHost: x\r\n"
                + f"{HEADER}: {SECRET}\r\nContent-Type: {JSON}\r\n".encode()
                + b"Content-Length: 100\r\n\r\n{"
            )
            received = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some():  # b"" once the server closes
                    received += chunk
        assert received.startswith(b"HTTP/1.1 408")
        assert b"did not arrive within 0.3 s" in received
        assert s.stats.timed_out == 1
        assert await store.pending_inbox() == []


async def test_answers_are_observed_and_an_accepted_update_is_logged(served: Served) -> None:
    with capture_logs() as logs:
        await post(served, update())
        await post(served, update(), secret="wrong")
    assert served.observed == [
        ("/webhooks/telegram", "POST", 200),
        ("/webhooks/telegram", "POST", 403),
    ]
    [accepted] = [e for e in logs if e["event"] == "telegram.webhook_accepted"]
    [row] = await served.wired.store.pending_inbox()
    assert accepted["correlation_id"] == row.correlation_id
    assert (accepted["outcome"], accepted["inbox_id"]) == ("accepted", row.inbox_id)
