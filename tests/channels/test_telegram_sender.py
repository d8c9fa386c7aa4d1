"""TelegramSender against the fake Bot API over real HTTP: parts, fallbacks, error classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import httpx2
import pytest

from concierge.channels import SendStatus, TelegramClient, TelegramSender
from concierge.channels.telegram_format import utf16_len
from concierge.protocol import Channel, OutboxRow
from tests.fakes.telegram_api import ApiFailure, FakeTelegram
from tests.store.records import outbox_row

pytestmark = pytest.mark.anyio


def row(text: str, *, last_error: str | None = None) -> OutboxRow:
    return outbox_row(Channel.TELEGRAM, "111", text, last_error=last_error)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    async with fake.serve():
        yield fake


@pytest.fixture
async def client(fake: FakeTelegram) -> AsyncIterator[TelegramClient]:
    async with httpx2.AsyncClient(timeout=5.0) as http:
        yield TelegramClient(token=fake.token, base_url=fake.url, http=http)


async def test_short_reply_is_sent_as_html(fake: FakeTelegram, client: TelegramClient) -> None:
    result = await TelegramSender(client=client).send(row("La messe est à **10h30** & <après>"))
    assert result.status is SendStatus.SENT
    [sent] = fake.sent
    assert sent.parse_mode == "HTML"
    assert sent.raw == "La messe est à <b>10h30</b> &amp; &lt;après&gt;"
    assert sent.text == "La messe est à 10h30 & <après>"
    assert fake.calls_to("sendMessage")[0].params["link_preview_options"] == {"is_disabled": True}


async def test_ten_thousand_character_reply_arrives_as_ordered_parts(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    paragraphs = [
        (f"§{i} " + "Une phrase de la réponse, avec des mots. " * 13).strip() for i in range(20)
    ]
    text = "\n\n".join(paragraphs)
    assert len(text) > 10_000
    result = await TelegramSender(client=client).send(row(text))
    assert result.status is SendStatus.SENT
    assert len(fake.sent) >= 3
    assert all(utf16_len(m.text) <= 4096 and utf16_len(m.raw) <= 4096 for m in fake.sent)
    received = "\n\n".join(m.text for m in fake.sent)
    assert received == text
    assert [p.split(" ")[0] for p in received.split("\n\n")] == [f"§{i}" for i in range(20)]
    assert result.message_ids == tuple(str(m.message_id) for m in fake.sent)


async def test_unparsable_entities_are_retried_as_plain_text(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    fake.fail_next("sendMessage", FakeTelegram.cannot_parse_entities())
    sender = TelegramSender(client=client)
    result = await sender.send(row("**Bonjour** <toi>"))
    assert result.status is SendStatus.SENT
    calls = fake.calls_to("sendMessage")
    assert calls[0].params["parse_mode"] == "HTML"
    assert "parse_mode" not in calls[1].params
    assert calls[1].params["text"] == "Bonjour <toi>"
    assert [m.text for m in fake.sent] == ["Bonjour <toi>"]
    assert sender.plain_fallbacks == 1
    assert result.message_ids == (str(fake.sent[0].message_id),)


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (FakeTelegram.too_many_requests(retry_after=7), SendStatus.RETRY),
        (
            ApiFailure(status=403, description="Forbidden: bot was blocked by the user"),
            SendStatus.UNREACHABLE,
        ),
        (
            ApiFailure(status=403, description="Forbidden: user is deactivated"),
            SendStatus.UNREACHABLE,
        ),
        (ApiFailure(status=400, description="Bad Request: chat not found"), SendStatus.REJECTED),
        (ApiFailure(status=502, description="Bad Gateway"), SendStatus.RETRY),
        (ApiFailure(status=500, description="Internal Server Error"), SendStatus.RETRY),
    ],
)
async def test_failures_are_classified(
    fake: FakeTelegram, client: TelegramClient, failure: ApiFailure, status: SendStatus
) -> None:
    fake.fail_next("sendMessage", failure)
    result = await TelegramSender(client=client).send(row("Bonjour"))
    assert result.status is status
    assert failure.description in result.detail
    if failure.status == 429:
        assert result.retry_after_s == 7


async def test_retry_after_header_is_used_without_parameters(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    fake.fail_next(
        "sendMessage", ApiFailure(status=429, description="Too Many Requests", retry_after=None)
    )
    result = await TelegramSender(client=client).send(row("Bonjour"))
    assert result.status is SendStatus.RETRY
    assert result.retry_after_s is None
    # with only the header
    fake.fail_next(
        "sendMessage",
        attrs.evolve(FakeTelegram.too_many_requests(retry_after=4), retry_after_in_body=False),
    )
    result = await TelegramSender(client=client).send(row("Bonjour"))
    assert result.retry_after_s == 4


async def test_network_failure_is_a_retry() -> None:
    async with httpx2.AsyncClient(timeout=2.0) as http:
        client = TelegramClient(token="1:x", base_url="http://127.0.0.1:9", http=http)
        result = await TelegramSender(client=client).send(row("Bonjour"))
    assert result.status is SendStatus.RETRY
    assert "sendMessage" in result.detail
    assert "1:x" not in result.detail  # the token never appears in errors


async def test_parts_already_sent_are_not_sent_again_on_retry(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    text = "\n\n".join(f"Partie {i}. " + "x" * 3000 for i in range(3))
    sender = TelegramSender(client=client)
    # part 1 succeeds, part 2 hits a flood wait
    fake.fail_next("sendMessage", None, FakeTelegram.too_many_requests(retry_after=1))
    first = await sender.send(row(text))
    assert first.status is SendStatus.RETRY
    assert first.detail.startswith("parts_sent=1/3;")
    second = await sender.send(row(text, last_error=first.detail))
    assert second.status is SendStatus.SENT
    assert [m.text.split(".")[0] for m in fake.sent] == ["Partie 0", "Partie 1", "Partie 2"]


async def test_progress_survives_a_new_sender_through_last_error(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    text = "\n\n".join(f"Partie {i}. " + "y" * 3000 for i in range(3))
    result = await TelegramSender(client=client).send(
        row(text, last_error="parts_sent=2/3; Too Many Requests")
    )
    assert result.status is SendStatus.SENT
    assert [m.text.split(".")[0] for m in fake.sent] == ["Partie 2"]
    # a record for a different split is not trusted
    fake.sent.clear()
    await TelegramSender(client=client).send(row(text, last_error="parts_sent=2/5; x"))
    assert len(fake.sent) == 3


async def test_empty_reply_is_rejected_without_a_call(
    fake: FakeTelegram, client: TelegramClient
) -> None:
    result = await TelegramSender(client=client).send(row("   "))
    assert result.status is SendStatus.REJECTED
    assert fake.calls == []
