"""A small WAHA REST client over httpx2: presence, sendText, session status.

Every call returns a ``WahaCall`` (status, parsed body, ``Retry-After``) instead of
raising: HTTP errors, timeouts and refused connections are results the sender
classifies. ``X-Api-Key`` goes on every request when configured.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import httpx2
import structlog

from concierge.settings import WahaSettings

__all__ = ["WahaCall", "WahaClient", "open_waha_client", "parse_retry_after"]

log = structlog.get_logger(__name__)

MAX_DETAIL_CHARS = 300


@attrs.frozen(kw_only=True)
class WahaCall:
    """The outcome of one request; ``status_code`` is ``None`` when no HTTP answer came."""

    status_code: int | None
    body: Any = None
    detail: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WahaClient:
    """Calls one WAHA session; ``http`` is owned by the caller (see ``open_waha_client``)."""

    def __init__(
        self,
        *,
        http: httpx2.AsyncClient,
        base_url: str,
        session: str,
        api_key: str | None = None,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._api_key = api_key

    @property
    def session(self) -> str:
        return self._session

    async def send_seen(self, chat_id: str, *, correlation_id: str = "") -> WahaCall:
        """Mark the chat read (the blue ticks): the first step of a human-looking reply."""
        return await self._post("/api/sendSeen", {"chatId": chat_id}, correlation_id)

    async def start_typing(self, chat_id: str, *, correlation_id: str = "") -> WahaCall:
        return await self._post("/api/startTyping", {"chatId": chat_id}, correlation_id)

    async def stop_typing(self, chat_id: str, *, correlation_id: str = "") -> WahaCall:
        return await self._post("/api/stopTyping", {"chatId": chat_id}, correlation_id)

    async def send_text(
        self, chat_id: str, text: str, *, reply_to: str | None = None, correlation_id: str = ""
    ) -> WahaCall:
        payload: dict[str, Any] = {"chatId": chat_id, "text": text, "linkPreview": False}
        if reply_to is not None:
            payload["reply_to"] = reply_to
        return await self._post("/api/sendText", payload, correlation_id)

    async def session_status(self, *, correlation_id: str = "") -> WahaCall:
        """``GET /api/sessions/{session}``: body ``status`` is ``WORKING`` when WAHA can send."""
        return await self._call(
            "GET", f"/api/sessions/{quote(self._session, safe='')}", None, correlation_id
        )

    async def _post(self, path: str, payload: dict[str, Any], correlation_id: str) -> WahaCall:
        return await self._call("POST", path, {"session": self._session, **payload}, correlation_id)

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None, correlation_id: str
    ) -> WahaCall:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["X-Api-Key"] = self._api_key
        if correlation_id:
            headers["X-Request-Id"] = correlation_id
        try:
            response = await self._http.request(
                method, self._base_url + path, json=payload, headers=headers
            )
        except httpx2.TimeoutException as exc:
            return WahaCall(status_code=None, detail=f"timed out ({type(exc).__name__})")
        except httpx2.HTTPError as exc:
            return WahaCall(
                status_code=None, detail=f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
            )
        body: Any
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        detail = "" if response.is_success else _error_detail(response, body)
        return WahaCall(
            status_code=response.status_code,
            body=body,
            detail=detail,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )


def _error_detail(response: httpx2.Response, body: Any) -> str:
    """WAHA's error text: NestJS puts it in ``message`` or ``error`` (or ``exception.message``)."""
    text: Any = None
    if isinstance(body, dict):
        text = body.get("error") or body.get("message")
        exception = body.get("exception")
        if text is None and isinstance(exception, dict):
            text = exception.get("message")
    if not isinstance(text, str):
        text = response.text
    return f"{response.status_code}: {text}"[:MAX_DETAIL_CHARS]


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; ``None`` if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), 3600.0)


@asynccontextmanager
async def open_waha_client(
    settings: WahaSettings, *, timeout_s: float = 15.0
) -> AsyncIterator[WahaClient]:
    """A ``WahaClient`` with its own connection pool, closed when the block ends."""
    async with httpx2.AsyncClient(
        timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 5.0))
    ) as http:
        yield WahaClient(
            http=http, base_url=settings.url, session=settings.session, api_key=settings.api_key
        )
