"""The WAHA sender against the loopback fake: the anti-ban call order, splitting, retries, resumption."""

from __future__ import annotations

import random

import httpx2
import pytest

from concierge.channels import ChannelSender, SendStatus, WahaClient, WahaPacing, WahaSender
from concierge.channels.waha_client import WahaCall
from concierge.channels.waha_sender import classify_call
from concierge.protocol import Channel, OutboxRow
from concierge.settings import WahaSettings
from tests.fakes.llm_common import Scripted
from tests.fakes.waha_api import FakeWaha
from tests.store.records import outbox_row

pytestmark = pytest.mark.anyio

CHAT = "33612345678@c.us"
NO_PAUSE = WahaPacing(typing_max_s=0.0, max_part_chars=4000)


def row(
    text: str = "La messe est à 10 h 30.", *, outbox_id: int = 1, chat_id: str = CHAT
) -> OutboxRow:
    return outbox_row(Channel.WAHA, chat_id, text, outbox_id=outbox_id)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_the_sender_is_a_channel_sender_for_waha(waha_client: WahaClient) -> None:
    sender: ChannelSender = WahaSender(client=waha_client, pacing=NO_PAUSE)
    assert sender.channel is Channel.WAHA


async def test_a_reply_goes_seen_typing_stop_then_text(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    sleeps = Sleeps()
    sender = WahaSender(client=waha_client, pacing=WahaPacing(), sleep=sleeps, rng=random.Random(1))
    result = await sender.send(row())
    assert result.status is SendStatus.SENT
    assert fake_waha.calls() == [
        ("sendSeen", CHAT),
        ("startTyping", CHAT),
        ("stopTyping", CHAT),
        ("sendText", CHAT),
    ]
    assert fake_waha.texts() == ["La messe est à 10 h 30."]
    assert len(sleeps.calls) == 1
    assert sleeps.calls[0] > 0


async def test_the_chat_id_is_normalised_before_sending(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    sender = WahaSender(client=waha_client, pacing=NO_PAUSE)
    result = await sender.send(row(chat_id="33612345678@s.whatsapp.net"))
    assert result.status is SendStatus.SENT
    assert {chat for _, chat in fake_waha.calls()} == {CHAT}


def test_typing_pause_grows_with_length_and_is_capped() -> None:
    pacing = WahaPacing(typing_chars_per_s=10.0, typing_max_s=4.0, jitter=0.0)
    rng = random.Random(0)
    assert pacing.typing_delay_s("x" * 10, rng) == pytest.approx(1.0)
    assert pacing.typing_delay_s("x" * 20, rng) == pytest.approx(2.0)
    assert pacing.typing_delay_s("x" * 1000, rng) == 4.0
    assert WahaPacing(typing_max_s=0.0).typing_delay_s("x" * 1000, rng) == 0.0


def test_typing_pause_jitter_stays_within_bounds() -> None:
    pacing = WahaPacing(typing_chars_per_s=10.0, typing_max_s=100.0, jitter=0.2)
    rng = random.Random(3)
    delays = {pacing.typing_delay_s("x" * 100, rng) for _ in range(50)}
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(delays) > 1


def test_pacing_comes_from_settings() -> None:
    settings = WahaSettings(
        url="http://waha:3000",
        api_key=None,
        session="default",
        hmac_key="k",
        allow_unsigned=False,
        timestamp_window_s=600,
        allow_groups=False,
        typing_chars_per_s=12.0,
        typing_max_s=2.5,
        max_part_chars=1500,
    )
    pacing = WahaPacing.from_settings(settings)
    assert (pacing.typing_chars_per_s, pacing.typing_max_s, pacing.max_part_chars) == (
        12.0,
        2.5,
        1500,
    )


async def test_a_long_reply_is_split_and_sent_in_order(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    paragraphs = [f"Paragraphe {i}. " + "Texte de la réponse. " * 8 for i in range(1, 6)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    sleeps = Sleeps()
    sender = WahaSender(client=waha_client, pacing=WahaPacing(max_part_chars=400), sleep=sleeps)
    result = await sender.send(row(text))
    assert result.status is SendStatus.SENT
    sent = fake_waha.texts()
    assert len(sent) > 1
    assert all(len(part) <= 400 for part in sent)
    assert " ".join(sent).split() == text.split()
    # every part holds whole paragraphs, in their order
    assert [q for part in sent for q in part.split("\n\n")] == [p.strip() for p in paragraphs]
    endpoints = [endpoint for endpoint, _ in fake_waha.calls()]
    assert endpoints == ["sendSeen"] + ["startTyping", "stopTyping", "sendText"] * len(sent)
    assert len(sleeps.calls) == len(sent)


@pytest.mark.parametrize("retry_after_s", [None, 7.0])
async def test_rate_limit_is_retried_with_the_servers_hint(
    fake_waha: FakeWaha, waha_client: WahaClient, retry_after_s: float | None
) -> None:
    fake_waha.push(FakeWaha.rate_limited(retry_after_s=retry_after_s))
    sender = WahaSender(client=waha_client, pacing=NO_PAUSE)
    result = await sender.send(row())
    assert result.status is SendStatus.RETRY
    assert result.retry_after_s == retry_after_s
    assert "429" in result.detail
    again = await sender.send(row())
    assert again.status is SendStatus.SENT
    assert len(fake_waha.texts()) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(
    fake_waha: FakeWaha, waha_client: WahaClient, status: int
) -> None:
    fake_waha.push(Scripted(status=status, body={"statusCode": status, "message": "upstream"}))
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.RETRY


async def test_a_session_that_is_not_working_yet_is_retried(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(FakeWaha.session_not_working())
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.RETRY


async def test_other_client_errors_reject_the_row(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(FakeWaha.bad_request())
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.REJECTED
    assert "400" in result.detail


async def test_an_unreachable_waha_is_retried_without_sending(waha_client: WahaClient) -> None:
    async with FakeWaha.serve() as gone:
        url = gone.url
    async with httpx2.AsyncClient(timeout=2.0) as http:
        client = WahaClient(http=http, base_url=url, session="default")
        result = await WahaSender(client=client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.RETRY
    assert result.detail.startswith("sendSeen")


async def test_a_transient_presence_failure_aborts_before_typing(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(FakeWaha.server_error(), endpoint="sendSeen")
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.RETRY
    assert fake_waha.calls() == [("sendSeen", CHAT)]


async def test_a_refused_presence_call_does_not_stop_the_reply(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    fake_waha.push(FakeWaha.bad_request("unsupported for @lid"), endpoint="sendSeen")
    fake_waha.push(FakeWaha.bad_request("unsupported"), endpoint="stopTyping")
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.SENT
    assert fake_waha.texts() == ["La messe est à 10 h 30."]


async def test_a_retry_resumes_after_the_parts_already_sent(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    text = "\n\n".join(f"Partie {i}. " + "Du texte ici. " * 20 for i in range(1, 4))
    sender = WahaSender(client=waha_client, pacing=WahaPacing(typing_max_s=0.0, max_part_chars=300))
    parts = sender.parts_of(text)
    assert len(parts) == 3
    fake_waha.push(Scripted(status=201), FakeWaha.server_error())  # part 1 goes, part 2 fails
    first = await sender.send(row(text, outbox_id=42))
    assert first.status is SendStatus.RETRY
    assert "part 2/3" in first.detail
    second = await sender.send(row(text, outbox_id=42))
    assert second.status is SendStatus.SENT
    delivered = [r.json["text"] for r in fake_waha.requests_to("sendText")]
    assert delivered == [
        parts[0],
        parts[1],
        parts[1],
        parts[2],
    ]  # the failed attempt, then the resume
    assert [e for e, _ in fake_waha.calls()].count("sendSeen") == 1


async def test_progress_is_kept_per_row(fake_waha: FakeWaha, waha_client: WahaClient) -> None:
    text = "\n\n".join(f"Partie {i}. " + "Du texte ici. " * 20 for i in range(1, 3))
    sender = WahaSender(client=waha_client, pacing=WahaPacing(typing_max_s=0.0, max_part_chars=300))
    fake_waha.push(Scripted(status=201), FakeWaha.server_error())
    assert (await sender.send(row(text, outbox_id=1))).status is SendStatus.RETRY
    assert (
        await sender.send(row(text, outbox_id=2))
    ).status is SendStatus.SENT  # a fresh row sends all
    assert len(fake_waha.texts()) == 2 + 2


async def test_a_bad_chat_id_is_rejected_without_calling_waha(
    fake_waha: FakeWaha, waha_client: WahaClient
) -> None:
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row(chat_id="not-a-chat"))
    assert result.status is SendStatus.REJECTED
    assert "chat id" in result.detail
    assert fake_waha.requests == []


async def test_an_empty_reply_is_rejected(fake_waha: FakeWaha, waha_client: WahaClient) -> None:
    result = await WahaSender(client=waha_client, pacing=NO_PAUSE).send(row("  \n "))
    assert result.status is SendStatus.REJECTED
    assert fake_waha.requests == []


async def test_a_wrong_api_key_is_retried_slowly(fake_waha: FakeWaha) -> None:
    async with httpx2.AsyncClient(timeout=2.0) as http:
        client = WahaClient(http=http, base_url=fake_waha.url, session="default", api_key="wrong")
        result = await WahaSender(client=client, pacing=NO_PAUSE).send(row())
    assert result.status is SendStatus.RETRY
    assert result.retry_after_s is not None
    assert result.retry_after_s >= 60


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (None, "timed out", SendStatus.RETRY),
        (408, "408: timeout", SendStatus.RETRY),
        (429, "429", SendStatus.RETRY),
        (500, "500", SendStatus.RETRY),
        (401, "401: Unauthorized", SendStatus.RETRY),
        (422, "422: Session status is not as expected", SendStatus.RETRY),
        (422, "422: WAHA Core support only 'default' session", SendStatus.REJECTED),
        (400, "400: bad", SendStatus.REJECTED),
        (404, "404: not found", SendStatus.REJECTED),
    ],
)
def test_classification_of_failed_calls(
    status: int | None, detail: str, expected: SendStatus
) -> None:
    assert (
        classify_call(WahaCall(status_code=status, detail=detail), step="sendText").status
        is expected
    )
