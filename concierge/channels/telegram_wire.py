"""Telegram Bot API wire format: Update → ``InboundMessage``, or a typed ignore.

Only private messages from people are answered: text and commands become ``TEXT`` /
``COMMAND``, media without a caption becomes ``MEDIA`` (the conversation says it reads
text only), a caption counts as the text. In the configured staff chat, a command or a
reply to one of the bot's messages becomes ``STAFF`` (for the staff desk, keyed
``staff:telegram:<sender>`` so it never mixes with that person's own conversation).
Everything else (edits, other groups, channel posts, callback queries, stickers, service
messages, staff chatter) is ``Ignored`` with a reason that is counted. Input that is not
an Update raises ``MalformedUpdate`` and nothing else. ``update_id`` is the dedupe key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
import structlog

from concierge.protocol import Channel, InboundKind, InboundMessage, new_correlation_id, utcnow

log = structlog.get_logger(__name__)

# The update types the parser turns into work; everything else is not even asked for.
ALLOWED_UPDATES: tuple[str, ...] = ("message",)

_MEDIA_FIELDS = (
    "photo",
    "voice",
    "audio",
    "video",
    "video_note",
    "document",
    "animation",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "paid_media",
    "story",
)
_IGNORED_UPDATE_FIELDS = (
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "business_message",
)
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,64})(@[A-Za-z0-9_]{1,64})?(?=\s|$)")


class MalformedUpdate(ValueError):
    """The input is not a Telegram Update; the message says which part is wrong."""


@attrs.frozen(kw_only=True)
class Ignored:
    """A well-formed update the concierge does not answer (counted by ``reason``)."""

    update_id: int
    reason: str


ParsedUpdate = InboundMessage | Ignored


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(name)
    if isinstance(value, bool) and kind is int:
        raise MalformedUpdate(f"{where}.{name} must be an integer, got a boolean")
    if not isinstance(value, kind):
        raise MalformedUpdate(f"{where}.{name} is missing or not a {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "integer", str: "string", dict: "object", list: "array"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _clean(text: str) -> str:
    """Drop NUL (PostgreSQL refuses it in text) and lone surrogates (not encodable as UTF-8)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def parse_update(
    data: object,
    *,
    received_at: datetime | None = None,
    correlation_id: str | None = None,
    staff_chat_id: str | None = None,
) -> ParsedUpdate:
    """Normalise one decoded Update; raise ``MalformedUpdate`` (only) for anything else.

    ``staff_chat_id`` is the chat whose messages are staff work (``CONCIERGE_STAFF_CHAT_ID``).
    """
    if not isinstance(data, dict):
        raise MalformedUpdate("the update must be a JSON object")
    update_id = _field(data, "update_id", int, "update")
    message = data.get("message")
    if message is None:
        for name in _IGNORED_UPDATE_FIELDS:
            if name in data:
                return Ignored(update_id=update_id, reason=name)
        return Ignored(update_id=update_id, reason="unsupported_update")
    if not isinstance(message, dict):
        raise MalformedUpdate("update.message must be an object")
    chat = _field(message, "chat", dict, "message")
    chat_id = _field(chat, "id", int, "message.chat")
    if staff_chat_id is not None and str(chat_id) == staff_chat_id:
        return _staff_message(
            update_id, message, received_at=received_at, correlation_id=correlation_id
        )
    chat_type = chat.get("type")
    if chat_type != "private":
        return Ignored(update_id=update_id, reason="not_private_chat")
    person = _person(update_id, message)
    if isinstance(person, Ignored):
        return person
    sender, user_id = person
    content = _content(message)
    if isinstance(content, str):
        return Ignored(update_id=update_id, reason=content)
    text, kind = content
    language = sender.get("language_code")
    return InboundMessage(
        correlation_id=correlation_id or new_correlation_id(),
        channel=Channel.TELEGRAM,
        user_key=f"telegram:{user_id}",
        chat_id=str(chat_id),
        external_id=str(update_id),
        text=text,
        kind=kind,
        received_at=received_at or utcnow(),
        display_name=_first_name(sender),
        language_hint=_clean(language[:16]) or None if isinstance(language, str) else None,
    )


def _content(message: dict[str, Any]) -> tuple[str, InboundKind] | str:
    """The message's text and kind, or why it is ignored (``sticker``, ``service_message``).

    Text wins over a caption, a caption over media alone (``[photo]``, a ``MEDIA`` kind).
    """
    text = message.get("text")
    caption = message.get("caption")
    if text is not None and not isinstance(text, str):
        raise MalformedUpdate("message.text must be a string")
    if caption is not None and not isinstance(caption, str):
        raise MalformedUpdate("message.caption must be a string")
    if "sticker" in message:
        return "sticker"
    media = next((name for name in _MEDIA_FIELDS if name in message), None)
    text = _clean(text) if text is not None else None
    caption = _clean(caption) if caption is not None else None
    if text is not None and text.strip():
        text, command = _without_bot_name(text)
        return text, InboundKind.COMMAND if command else InboundKind.TEXT
    if caption is not None and caption.strip():
        return caption, InboundKind.TEXT
    if media is not None:
        return f"[{media}]", InboundKind.MEDIA
    return "service_message"


def _person(update_id: int, message: Mapping[str, Any]) -> tuple[Mapping[str, Any], int] | Ignored:
    """Who wrote ``message`` and their id, or why it is not a person's to answer."""
    sender = message.get("from")
    if not isinstance(sender, dict):
        return Ignored(update_id=update_id, reason="no_sender")
    user_id = _field(sender, "id", int, "message.from")
    if sender.get("is_bot") is True:
        return Ignored(update_id=update_id, reason="bot_sender")
    return sender, user_id


def _without_bot_name(text: str) -> tuple[str, bool]:
    """``/start@bot rest`` → ``/start rest``; and whether the text is a command."""
    command = _COMMAND.match(text)
    if command and command.group(2):
        text = f"/{command.group(1)}{text[command.end() :]}"
    return text, command is not None


def _first_name(sender: Mapping[str, Any]) -> str | None:
    first_name = sender.get("first_name")
    return _clean(first_name[:128]) or None if isinstance(first_name, str) else None


def _staff_message(
    update_id: int,
    message: Mapping[str, Any],
    *,
    received_at: datetime | None,
    correlation_id: str | None,
) -> ParsedUpdate:
    """A message in the staff chat: a command, or a reply to one of the bot's messages."""
    person = _person(update_id, message)
    if isinstance(person, Ignored):
        return person
    sender, user_id = person
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise MalformedUpdate("message.text must be a string")
    if not text or not text.strip():
        return Ignored(update_id=update_id, reason="staff_not_text")
    replied = message.get("reply_to_message")
    reply_to: str | None = None
    if isinstance(replied, dict):
        author = replied.get("from")
        replied_id = replied.get("message_id")
        if (
            isinstance(author, dict)
            and author.get("is_bot") is True
            and isinstance(replied_id, int)
        ):
            reply_to = str(replied_id)
    text, command = _without_bot_name(_clean(text))
    if not command and reply_to is None:
        return Ignored(update_id=update_id, reason="staff_chatter")
    chat = message["chat"]
    return InboundMessage(
        correlation_id=correlation_id or new_correlation_id(),
        channel=Channel.TELEGRAM,
        user_key=f"staff:telegram:{user_id}",
        chat_id=str(chat["id"]),
        external_id=str(update_id),
        text=text,
        kind=InboundKind.STAFF,
        received_at=received_at or utcnow(),
        display_name=_first_name(sender),
        reply_to=reply_to,
    )


def parse_update_body(body: bytes, **kwargs: Any) -> ParsedUpdate:
    """Decode a webhook body and parse it; a body that is not JSON is a ``MalformedUpdate``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedUpdate(f"the body is not valid JSON: {exc}") from None
    return parse_update(data, **kwargs)
