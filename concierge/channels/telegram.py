"""Telegram Bot API wire format: Update → ``NewInbound`` (or a typed ignore), and an httpx client.

Only private messages from people are answered: text and commands become ``TEXT`` /
``COMMAND``, media without a caption becomes ``MEDIA`` (the conversation says it reads
text only), a caption counts as the text. Everything else (edits, groups, channel
posts, callback queries, stickers, service messages) is ``Ignored`` with a reason
that is counted. Input that is not an Update raises ``MalformedUpdate`` and nothing
else. ``update_id`` is the dedupe key.

Errors of the client:

TelegramError
├── TelegramNetworkError   no HTTP answer: connect/read failure or timeout (retry)
└── TelegramApiError       Telegram answered ``ok: false`` (or garbage) with a status code
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import attrs
import httpx
import structlog

from concierge.protocol import Channel, InboundKind, new_correlation_id, utcnow
from concierge.settings import TelegramSettings
from concierge.store.base import NewInbound

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


ParsedUpdate = NewInbound | Ignored


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
    data: object, *, received_at: datetime | None = None, correlation_id: str | None = None
) -> ParsedUpdate:
    """Normalise one decoded Update; raise ``MalformedUpdate`` (only) for anything else."""
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
    chat_type = chat.get("type")
    if chat_type != "private":
        return Ignored(update_id=update_id, reason="not_private_chat")
    sender = message.get("from")
    if not isinstance(sender, dict):
        return Ignored(update_id=update_id, reason="no_sender")
    user_id = _field(sender, "id", int, "message.from")
    if sender.get("is_bot") is True:
        return Ignored(update_id=update_id, reason="bot_sender")
    text = message.get("text")
    caption = message.get("caption")
    if text is not None and not isinstance(text, str):
        raise MalformedUpdate("message.text must be a string")
    if caption is not None and not isinstance(caption, str):
        raise MalformedUpdate("message.caption must be a string")
    if "sticker" in message:
        return Ignored(update_id=update_id, reason="sticker")
    media = next((name for name in _MEDIA_FIELDS if name in message), None)
    text = _clean(text) if text is not None else None
    caption = _clean(caption) if caption is not None else None
    if text is not None and text.strip():
        command = _COMMAND.match(text)
        kind = InboundKind.COMMAND if command else InboundKind.TEXT
        if command and command.group(2):
            text = f"/{command.group(1)}{text[command.end() :]}"  # /start@bot → /start
    elif caption is not None and caption.strip():
        text, kind = caption, InboundKind.TEXT
    elif media is not None:
        text, kind = f"[{media}]", InboundKind.MEDIA
    else:
        return Ignored(update_id=update_id, reason="service_message")
    first_name = sender.get("first_name")
    language = sender.get("language_code")
    return NewInbound(
        correlation_id=correlation_id or new_correlation_id(),
        channel=Channel.TELEGRAM,
        user_key=f"telegram:{user_id}",
        chat_id=str(chat_id),
        external_id=str(update_id),
        text=text,
        kind=kind,
        received_at=received_at or utcnow(),
        display_name=_clean(first_name[:128]) or None if isinstance(first_name, str) else None,
        language_hint=_clean(language[:16]) or None if isinstance(language, str) else None,
    )


def parse_update_body(body: bytes, **kwargs: Any) -> ParsedUpdate:
    """Decode a webhook body and parse it; a body that is not JSON is a ``MalformedUpdate``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedUpdate(f"the body is not valid JSON: {exc}") from None
    return parse_update(data, **kwargs)


# -- the Bot API client ------------------------------------------------------------------
class TelegramError(Exception):
    """Base class of every client failure (never carries the bot token)."""


class TelegramNetworkError(TelegramError):
    """No HTTP answer from the Bot API: connection refused or reset, or a timeout."""


class TelegramApiError(TelegramError):
    """Telegram answered and refused; ``status`` is the HTTP status, ``description`` its reason."""

    def __init__(
        self,
        *,
        method: str,
        status: int,
        description: str,
        retry_after_s: float | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(f"{method}: HTTP {status}: {description}")
        self.method = method
        self.status = status
        self.description = description
        self.retry_after_s = retry_after_s
        self.migrate_to_chat_id = migrate_to_chat_id

    @property
    def is_conflict(self) -> bool:
        return self.status == 409

    @property
    def is_unauthorized(self) -> bool:
        """The token is wrong or revoked: retrying cannot help."""
        return self.status in (401, 404)

    @property
    def cannot_parse_entities(self) -> bool:
        return self.status == 400 and "can't parse entities" in self.description.lower()

    @property
    def is_transient(self) -> bool:
        return self.status == 429 or self.status >= 500


def _retry_after(response: httpx.Response, parameters: Mapping[str, Any]) -> float | None:
    value = parameters.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None
    return None


class TelegramClient:
    """Calls Bot API methods over one pooled ``httpx.AsyncClient``.

    The token is part of every URL, so URLs are never logged or put in errors.
    """

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://api.telegram.org",
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not token or "/" in token or any(c.isspace() for c in token):
            raise ValueError("TELEGRAM_BOT_TOKEN must be a non-empty token without '/' or spaces")
        self._prefix = f"{base_url.rstrip('/')}/bot{token}/"
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=64)
        )
        self._timeout_s = timeout_s

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> TelegramClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Call ``method`` with a JSON body; return its ``result`` or raise a ``TelegramError``."""
        timeout = timeout_s if timeout_s is not None else self._timeout_s
        try:
            response = await self._http.post(
                self._prefix + method, json=dict(params or {}), timeout=timeout
            )
        except httpx.TimeoutException:
            raise TelegramNetworkError(f"{method}: no answer within {timeout:g} s") from None
        except httpx.TransportError as exc:
            raise TelegramNetworkError(f"{method}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TelegramApiError(
                method=method,
                status=response.status_code if response.status_code >= 400 else 502,
                description="the Bot API answered without a JSON object",
                retry_after_s=_retry_after(response, {}),
            )
        if body.get("ok") is True and response.is_success:
            return body.get("result")
        parameters = body.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        migrate = parameters.get("migrate_to_chat_id")
        description = body.get("description")
        raise TelegramApiError(
            method=method,
            status=response.status_code if response.status_code >= 400 else 500,
            description=description if isinstance(description, str) else "no description",
            retry_after_s=_retry_after(response, parameters),
            migrate_to_chat_id=migrate if isinstance(migrate, int) else None,
        )

    async def get_me(self) -> dict[str, Any]:
        result = await self.call("getMe")
        return result if isinstance(result, dict) else {}

    async def get_updates(
        self,
        *,
        offset: int | None,
        timeout_s: int,
        allowed_updates: Sequence[str] = ALLOWED_UPDATES,
        limit: int = 100,
    ) -> list[Any]:
        """Long-poll for updates; ``timeout_s`` is clamped to Telegram's 50 s maximum."""
        timeout_s = max(0, min(timeout_s, 50))
        params: dict[str, Any] = {
            "timeout": timeout_s,
            "limit": limit,
            "allowed_updates": list(allowed_updates),
        }
        if offset is not None:
            params["offset"] = offset
        result = await self.call("getUpdates", params, timeout_s=timeout_s + self._timeout_s)
        if not isinstance(result, list):
            raise TelegramApiError(
                method="getUpdates", status=502, description="result is not an array"
            )
        return result

    async def set_webhook(
        self,
        *,
        url: str,
        secret_token: str,
        allowed_updates: Sequence[str] = ALLOWED_UPDATES,
        max_connections: int = 40,
    ) -> None:
        """Point Telegram at ``url``; pending updates are kept (they are delivered there)."""
        await self.call(
            "setWebhook",
            {
                "url": url,
                "secret_token": secret_token,
                "allowed_updates": list(allowed_updates),
                "max_connections": max_connections,
                "drop_pending_updates": False,
            },
        )

    async def delete_webhook(self, *, drop_pending_updates: bool) -> None:
        """Remove the webhook. Dropping pending updates loses messages, so callers must say so."""
        if drop_pending_updates:
            log.warning("telegram.pending_updates_dropped")
        await self.call("deleteWebhook", {"drop_pending_updates": drop_pending_updates})

    async def get_webhook_info(self) -> dict[str, Any]:
        result = await self.call("getWebhookInfo")
        return result if isinstance(result, dict) else {}

    async def send_message(
        self, *, chat_id: str, text: str, parse_mode: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        if parse_mode is not None:
            params["parse_mode"] = parse_mode
        result = await self.call("sendMessage", params)
        return result if isinstance(result, dict) else {}

    async def send_chat_action(self, *, chat_id: str, action: str = "typing") -> None:
        await self.call("sendChatAction", {"chat_id": chat_id, "action": action})


@asynccontextmanager
async def open_telegram_client(
    settings: TelegramSettings, *, timeout_s: float = 10.0
) -> AsyncIterator[TelegramClient]:
    """A ``TelegramClient`` with its own connection pool, closed when the block ends."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        yield TelegramClient(
            token=settings.bot_token, base_url=settings.api_base_url, http=http, timeout_s=timeout_s
        )
