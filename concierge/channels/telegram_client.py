"""A Bot API client over one pooled ``httpx2.AsyncClient``, with errors a caller can act on.

TelegramError
├── TelegramNetworkError   no HTTP answer: connect/read failure or timeout (retry)
└── TelegramApiError       Telegram answered ``ok: false`` (or garbage) with a status code
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import structlog

from concierge.channels.telegram_wire import ALLOWED_UPDATES

log = structlog.get_logger(__name__)


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


def _retry_after(response: httpx2.Response, parameters: Mapping[str, Any]) -> float | None:
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
    """Calls Bot API methods over one pooled ``httpx2.AsyncClient``.

    The token is part of every URL, so URLs are never logged or put in errors.
    """

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://api.telegram.org",
        http: httpx2.AsyncClient | None = None,
        timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if not token or "/" in token or any(c.isspace() for c in token):
            raise ValueError("TELEGRAM_BOT_TOKEN must be a non-empty token without '/' or spaces")
        self._prefix = f"{base_url.rstrip('/')}/bot{token}/"
        self._own_http = http is None
        self._http = http or httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout_s),
            # every connection kept alive: under load, closing idle ones (httpx keeps 20)
            # only to open new ones the next moment cost more than the sends
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
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
        except httpx2.TimeoutException:
            raise TelegramNetworkError(f"{method}: no answer within {timeout:g} s") from None
        except httpx2.TransportError as exc:
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
