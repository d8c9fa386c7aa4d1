"""Telegram Update → InboundMessage, a typed Ignored, or MalformedUpdate."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.channels import Ignored, MalformedUpdate, parse_update
from concierge.channels.telegram_wire import parse_update_body
from concierge.protocol import Channel, InboundKind, InboundMessage
from tests.fakes.telegram_api import FakeTelegram

fake = FakeTelegram()


def inbound(update: Any) -> InboundMessage:
    parsed = parse_update(update)
    assert isinstance(parsed, InboundMessage)
    return parsed


def test_private_text_message_becomes_text_inbound() -> None:
    update = fake.text_message(
        user_id=111,
        text="A che ora è la messa?",
        first_name="Ana",
        language_code="it",
        update_id=123456789,
    )
    message = inbound(update)
    assert message.channel is Channel.TELEGRAM
    assert message.kind is InboundKind.TEXT
    assert message.user_key == "telegram:111"
    assert message.chat_id == "111"
    assert message.external_id == "123456789"
    assert message.text == "A che ora è la messa?"
    assert message.display_name == "Ana"
    assert message.language_hint == "it"
    assert message.received_at.tzinfo is not None


def test_command_is_recognised_and_bot_suffix_dropped() -> None:
    message = inbound(fake.text_message(user_id=1, text="/start@parish_bot hello"))
    assert message.kind is InboundKind.COMMAND
    assert message.text == "/start hello"
    assert inbound(fake.text_message(user_id=1, text="/aide")).kind is InboundKind.COMMAND
    assert inbound(fake.text_message(user_id=1, text="/ pas une commande")).kind is InboundKind.TEXT


@pytest.mark.parametrize(
    "media", ["photo", "voice", "document", "video", "audio", "video_note", "location"]
)
def test_media_without_text_is_media_inbound(media: str) -> None:
    update = fake.text_message(user_id=5, text="")
    update["message"][media] = [{"file_id": "x"}]
    message = inbound(update)
    assert message.kind is InboundKind.MEDIA
    assert message.text == f"[{media}]"


def test_caption_of_media_is_read_as_text() -> None:
    message = inbound(
        fake.text_message(user_id=5, text="", photo=[{"file_id": "x"}], caption="Est-ce l'église ?")
    )
    assert message.kind is InboundKind.TEXT
    assert message.text == "Est-ce l'église ?"


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (fake.text_message(user_id=1, text="edit", field="edited_message"), "edited_message"),
        (
            fake.text_message(user_id=1, chat_id=-42, chat_type="group", text="hi"),
            "not_private_chat",
        ),
        (
            fake.text_message(user_id=1, chat_id=-10042, chat_type="supergroup", text="hi"),
            "not_private_chat",
        ),
        (
            fake.text_message(
                user_id=1, chat_id=-10043, chat_type="channel", text="hi", field="channel_post"
            ),
            "channel_post",
        ),
        ({"update_id": 9, "callback_query": {"id": "1", "data": "x"}}, "callback_query"),
        (fake.text_message(user_id=1, text="", sticker={"file_id": "s"}), "sticker"),
        (fake.text_message(user_id=1, text="", new_chat_title="x"), "service_message"),
        (fake.text_message(user_id=1, text="   "), "service_message"),
        ({"update_id": 9, "poll_answer": {}}, "unsupported_update"),
    ],
)
def test_updates_that_are_not_answered_are_ignored_with_a_reason(update: Any, reason: str) -> None:
    parsed = parse_update(update)
    assert isinstance(parsed, Ignored)
    assert parsed.reason == reason
    assert parsed.update_id == update["update_id"]


def test_messages_from_bots_are_ignored() -> None:
    update = fake.text_message(user_id=1, text="hi")
    update["message"]["from"]["is_bot"] = True
    assert parse_update(update) == Ignored(update_id=update["update_id"], reason="bot_sender")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "update.update_id is missing"),
        (b'{"update_id": "7"}', "update.update_id is missing or not a integer"),
        (b'{"update_id": true}', "must be an integer, got a boolean"),
        (b'{"update_id": 7, "message": []}', "update.message must be an object"),
        (
            b'{"update_id": 7, "message": {"chat": {"id": "x", "type": "private"}}}',
            "message.chat.id",
        ),
        (
            json.dumps(
                {
                    "update_id": 7,
                    "message": {"chat": {"id": 1, "type": "private"}, "from": {"id": 1}, "text": 5},
                }
            ).encode(),
            "message.text must be a string",
        ),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_raise_malformed_update_naming_the_problem(
    body: bytes, problem: str
) -> None:
    with pytest.raises(MalformedUpdate, match=problem):
        parse_update_body(body)
