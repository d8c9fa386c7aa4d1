"""The WAHA REST client against the loopback fake: headers, bodies, errors as results."""

from __future__ import annotations

import httpx2
import pytest

from concierge.channels import WahaClient
from concierge.channels.waha_client import parse_retry_after
from tests.channels.conftest import WAHA_API_KEY
from tests.fakes.llm_common import Scripted
from tests.fakes.waha_api import FakeWaha

pytestmark = pytest.mark.anyio

CHAT = "33612345678@c.us"


async def test_send_text_posts_session_chat_and_text_with_the_api_key(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    call = await waha_client.send_text(CHAT, "Bonjour", correlation_id="cid-7")
    assert call.ok
    assert call.status_code == 201
    assert call.body["to"] == CHAT
    [request] = fake_waha.requests_to("sendText")
    assert request.headers["x-api-key"] == WAHA_API_KEY
    assert request.headers["x-request-id"] == "cid-7"
    assert request.json == {
        "session": "default",
        "chatId": CHAT,
        "text": "Bonjour",
        "linkPreview": False,
    }


async def test_presence_calls_hit_their_endpoints(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    assert (await waha_client.send_seen(CHAT)).ok
    assert (await waha_client.start_typing(CHAT)).ok
    assert (await waha_client.stop_typing(CHAT)).ok
    assert fake_waha.calls() == [("sendSeen", CHAT), ("startTyping", CHAT), ("stopTyping", CHAT)]


async def test_a_wrong_api_key_is_a_401_result(fake_waha: FakeWaha) -> None:
    async with httpx2.AsyncClient() as http:
        client = WahaClient(http=http, base_url=fake_waha.url, session="default", api_key="wrong")
        call = await client.send_text(CHAT, "x")
    assert call.status_code == 401
    assert not call.ok
    assert "Unauthorized" in call.detail


async def test_rate_limit_carries_retry_after(fake_waha: FakeWaha, waha_client: WahaClient) -> None:
    fake_waha.push(FakeWaha.rate_limited(retry_after_s=7))
    call = await waha_client.send_text(CHAT, "x")
    assert (call.status_code, call.retry_after_s) == (429, 7.0)


async def test_error_detail_comes_from_the_body(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(FakeWaha.session_not_working())
    fake_waha.push(FakeWaha.server_error("boom"))
    first = await waha_client.send_text(CHAT, "x")
    second = await waha_client.send_text(CHAT, "x")
    assert first.detail.startswith("422: Session status is not as expected")
    assert second.detail == "500: boom"


async def test_a_non_json_answer_is_still_a_result(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(Scripted(status=502, raw=b"<html>Bad Gateway</html>"))
    call = await waha_client.send_text(CHAT, "x")
    assert call.status_code == 502
    assert call.body is None
    assert "Bad Gateway" in call.detail


async def test_a_refused_connection_is_a_result_without_status() -> None:
    async with FakeWaha.serve() as gone:
        url = gone.url
    async with httpx2.AsyncClient(timeout=2.0) as http:
        call = await WahaClient(http=http, base_url=url, session="default").send_text(CHAT, "x")
    assert call.status_code is None
    assert "ConnectError" in call.detail


async def test_a_timeout_is_a_result_without_status(fake_waha: FakeWaha) -> None:
    fake_waha.push(Scripted(hang=True))
    async with httpx2.AsyncClient(timeout=0.2) as http:
        client = WahaClient(
            http=http, base_url=fake_waha.url, session="default", api_key=WAHA_API_KEY
        )
        call = await client.send_text(CHAT, "x")
    assert call.status_code is None
    assert call.detail.startswith("timed out")


async def test_session_status_reads_the_session(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.session_status = "SCAN_QR_CODE"
    call = await waha_client.session_status()
    assert call.body["status"] == "SCAN_QR_CODE"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("99999", 3600.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_retry_after_is_read_as_seconds(value: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(value, now_s=now) == seconds
