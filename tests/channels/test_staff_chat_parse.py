"""Messages of the staff chat, on Telegram and WhatsApp: staff work, kept apart from users'."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from concierge.channels import Ignored, MalformedUpdate, parse_update
from concierge.channels.waha_wire import (
    Ignored as WahaIgnored,
    IgnoreReason,
    ParsedMessage,
    parse_envelope,
)
from concierge.protocol import Channel, InboundKind, InboundMessage
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.waha_api import message_event

STAFF_CHAT = -1001234567890
BOT = {"id": 222222222, "is_bot": True, "first_name": "Parish Bot"}


def in_staff_chat(text: str, **extra: Any) -> dict[str, Any]:
    return FakeTelegram().text_message(
        user_id=42, text=text, chat_id=STAFF_CHAT, chat_type="supergroup", first_name="Bob", **extra
    )


def staff(update: dict[str, Any]) -> InboundMessage:
    parsed = parse_update(update, staff_chat_id=str(STAFF_CHAT))
    assert isinstance(parsed, InboundMessage)
    return parsed


def test_a_command_in_the_staff_chat_is_staff_work_keyed_apart_from_the_sender() -> None:
    update = in_staff_chat("/r@parish_bot 12 Bonjour")
    message = staff(update)
    assert message.kind is InboundKind.STAFF
    assert (message.channel, message.user_key, message.chat_id) == (
        Channel.TELEGRAM,
        "staff:telegram:42",
        str(STAFF_CHAT),
    )
    assert (message.text, message.display_name, message.reply_to) == ("/r 12 Bonjour", "Bob", None)
    assert message.external_id == str(update["update_id"])


def test_a_reply_to_one_of_the_bots_messages_carries_what_it_replies_to() -> None:
    message = staff(
        in_staff_chat("Je m'en occupe", reply_to_message={"message_id": 7001, "from": BOT})
    )
    assert (message.text, message.reply_to) == ("Je m'en occupe", "7001")


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (in_staff_chat("On se voit à 18h ?"), "staff_chatter"),
        (
            in_staff_chat(
                "d'accord",
                reply_to_message={"message_id": 5, "from": {"id": 43, "is_bot": False}},
            ),
            "staff_chatter",
        ),
        (in_staff_chat("", photo=[{"file_id": "p"}]), "staff_not_text"),
        (
            FakeTelegram().text_message(
                user_id=42, text="/r 12 Bonjour", chat_id=-100999, chat_type="supergroup"
            ),
            "not_private_chat",
        ),
    ],
)
def test_staff_chatter_and_other_groups_are_ignored(update: dict[str, Any], reason: str) -> None:
    parsed = parse_update(update, staff_chat_id=str(STAFF_CHAT))
    assert isinstance(parsed, Ignored)
    assert parsed.reason == reason


def test_without_a_staff_chat_a_group_is_ignored_and_a_private_r_is_a_users_message() -> None:
    assert isinstance(parse_update(in_staff_chat("/r 12 Bonjour")), Ignored)
    private = parse_update(
        FakeTelegram().text_message(user_id=42, text="/r 12 Bonjour"),
        staff_chat_id=str(STAFF_CHAT),
    )
    assert isinstance(private, InboundMessage)
    assert (private.kind, private.user_key) == (InboundKind.COMMAND, "telegram:42")


def test_a_staff_message_with_a_text_that_is_not_a_string_is_malformed() -> None:
    update = in_staff_chat("x")
    update["message"]["text"] = 12
    with pytest.raises(MalformedUpdate, match=r"message\.text"):
        parse_update(update, staff_chat_id=str(STAFF_CHAT))


# -- WhatsApp (WAHA) ----------------------------------------------------------------------------
GROUP = "120363000000000001@g.us"


def parse_waha(event: dict[str, Any], *, staff_chat_id: str | None = GROUP) -> Any:
    return parse_envelope(
        json.dumps(event).encode(),
        session="default",
        allow_groups=False,
        received_at=datetime.now(UTC),
        correlation_id="c1",
        staff_chat_id=staff_chat_id,
    )


def test_a_command_in_the_staff_group_is_staff_work_from_its_participant() -> None:
    result = parse_waha(
        message_event(chat_id=GROUP, text="/close 12", participant="33611111111@c.us")
    )
    assert isinstance(result, ParsedMessage)
    message = result.message
    assert (message.kind, message.user_key, message.chat_id, message.text) == (
        InboundKind.STAFF,
        "staff:waha:33611111111@c.us",
        GROUP,
        "/close 12",
    )


def test_talk_in_the_staff_group_and_other_groups_are_ignored() -> None:
    chatter = parse_waha(message_event(chat_id=GROUP, text="merci", participant="33611111111@c.us"))
    assert isinstance(chatter, WahaIgnored)
    assert chatter.reason is IgnoreReason.STAFF_CHATTER
    other = parse_waha(message_event(chat_id="120363000000000002@g.us", text="/r 1 x"))
    assert isinstance(other, WahaIgnored)
    assert other.reason is IgnoreReason.GROUP
