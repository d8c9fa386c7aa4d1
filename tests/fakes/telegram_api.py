"""A fake Telegram Bot API and webhook pusher, speaking the documented wire format, errors included.

``FakeTelegram`` keeps the server's state (update queue and confirmed offset, webhook,
sent messages) and answers ``/bot<token>/<method>`` calls. Reach it over real HTTP on
loopback (``async with fake.serve(): ... fake.url``) or in-process through
``fake.transport()`` (an httpx2 transport: no sockets, so tests on trio's MockClock stay
deterministic). Usage::

    fake = FakeTelegram(token="123:abc")
    fake.add_update(fake.text_message(user_id=7, text="Bonjour"))
    fake.fail_next("sendMessage", FakeTelegram.too_many_requests(retry_after=3))
    fake.block(chat_id=7)                      # 403 bot was blocked by the user
    fake.flood_interval_s = 1.0                # 429 when one chat gets two messages within 1 s
    fake.latency_s = 0.1                       # every method answers after 100 ms
    fake.per_chat("sendChatAction")            # Counter: chat id -> calls, in ``fake.calls`` order
    client = TelegramClient(token=fake.token, base_url="http://fake",
                            http=httpx2.AsyncClient(transport=fake.transport()))

What it checks like Telegram does: getUpdates while a webhook is set (409), a second
concurrent long poll aborts the older one (409), the secret token's charset and length,
HTML that does not parse ("can't parse entities"), text over 4096 UTF-16 units after
entity parsing ("message is too long") and empty text.

``WebhookPusher`` delivers updates to a webhook the way the Bot API server does: one
queue per chat with only the head in flight, any non-2xx or connection error retried
after 1 s doubling up to 60 s (or the response's ``Retry-After``), delays multiplied by
``time_scale`` for tests.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from html.parser import HTMLParser
from typing import Any

import attrs
import httpx
import httpx2
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["ApiFailure", "FakeTelegram", "PushResult", "SentMessage", "WebhookPusher"]

_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}


@attrs.frozen(kw_only=True)
class ApiFailure:
    """A scripted Bot API error answer."""

    status: int
    description: str
    retry_after: int | None = None
    retry_after_in_body: bool = True  # False: only the Retry-After header carries it
    hang: bool = False
    html: str | None = None  # a broken proxy in front of the API answers this page instead

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None and self.retry_after_in_body:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@attrs.frozen(kw_only=True)
class SentMessage:
    message_id: int
    chat_id: str
    text: str  # as the user sees it (entities parsed)
    raw: str  # as sent
    parse_mode: str | None
    at: float  # trio.current_time() when accepted


@attrs.frozen(kw_only=True)
class Call:
    method: str
    params: Mapping[str, Any]
    at: float
    port: int | None = None
    """The fake's port the call came to (``serve(binds=2)``: one port per client)."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _EntityParser(HTMLParser):
    """Telegram's HTML mode, strictly: known tags, balanced, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        if tag in ("code", "pre") and any(t in ("code",) for t in self.stack):
            self.error = self.error or 'Can\'t find end tag corresponding to start tag "code"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f'Can\'t find end tag corresponding to start tag "{tag}"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(raw: str) -> tuple[str, str | None]:
    """(visible text, error or None) for a message sent with ``parse_mode=HTML``."""
    if re.search(r"<(?![a-zA-Z/])", raw) or re.search(
        r"&(?!(amp|lt|gt|quot|#\d+|#x[0-9a-fA-F]+);)", raw
    ):
        return raw, "Unsupported start tag or unescaped character"
    parser = _EntityParser()
    parser.feed(raw)
    parser.close()
    if parser.stack and parser.error is None:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"'
    return "".join(parser.text), parser.error


class FakeTelegram:
    def __init__(self, *, token: str = "123456789:AAFakeToken_for-tests_0123456789") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.sent: list[SentMessage] = []
        self.actions: list[Call] = []
        self.failures: dict[str, deque[ApiFailure | None]] = {}
        self.blocked: set[str] = set()
        self.deactivated: set[str] = set()
        self.flood_interval_s: float | None = None
        self.latency_s = 0.0
        """Every method answers this long after the request arrived (a network round trip)."""
        self.webhook: dict[str, Any] | None = None
        self.conflicts = 0
        self.allowed_updates: list[str] | None = None
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 100_000
        self._message_ids = itertools.count(1)
        self._changed = trio.Event()
        self._poll_generation = 0
        self._last_sent_at: dict[str, float] = {}
        self._port: int | None = None
        self.ports: list[int] = []
        self.polling: dict[int | None, int] = {}
        """Long polls answering now, by the port they came to."""
        self.overlapping_polls = 0
        """Long polls that began while another port's was still answering: two pollers."""

    # -- test controls -------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("not serving: use `async with fake.serve():`")
        return f"http://127.0.0.1:{self._port}"

    def transport(self) -> httpx2.AsyncBaseTransport:
        """An in-process transport to this fake (use with any base_url)."""
        return _Transport(self)

    def next_update_id(self) -> int:
        self._next_update_id += 1
        return self._next_update_id

    def text_message(
        self,
        *,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: str = "private",
        first_name: str = "Ana",
        language_code: str | None = "fr",
        update_id: int | None = None,
        field: str = "message",
        **extra: Any,
    ) -> dict[str, Any]:
        """A realistic Update carrying a text message (``field`` may be ``edited_message``)."""
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code is not None:
            sender["language_code"] = language_code
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": sender,
            "chat": {
                "id": chat_id if chat_id is not None else user_id,
                "type": chat_type,
                "first_name": first_name,
            },
            "date": 1_700_000_000,
        }
        if text:
            message["text"] = text
        message.update(extra)
        return {
            "update_id": update_id if update_id is not None else self.next_update_id(),
            field: message,
        }

    def add_update(self, update: Mapping[str, Any]) -> None:
        """Queue an update for getUpdates (wakes a waiting long poll)."""
        self._updates.append(dict(update))
        self._wake()

    def fail_next(self, method: str, *failures: ApiFailure | None) -> None:
        """Answer the next calls of ``method`` with ``failures`` in turn (``None``: as usual)."""
        self.failures.setdefault(method, deque()).extend(failures)

    def block(self, *, chat_id: int | str) -> None:
        self.blocked.add(str(chat_id))

    @staticmethod
    def too_many_requests(*, retry_after: int) -> ApiFailure:
        return ApiFailure(
            status=429,
            description=f"Too Many Requests: retry after {retry_after}",
            retry_after=retry_after,
        )

    @staticmethod
    def cannot_parse_entities() -> ApiFailure:
        return ApiFailure(
            status=400,
            description="Bad Request: can't parse entities: "
            'Unsupported start tag "foo" at byte offset 7',
        )

    @staticmethod
    def server_error() -> ApiFailure:
        return ApiFailure(status=502, description="Bad Gateway")

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def per_chat(self, method: str) -> Counter[str]:
        """How many calls of ``method`` each chat got (accepted or not)."""
        return Counter(str(c.params.get("chat_id", "")) for c in self.calls if c.method == method)

    def texts_to(self, chat_id: int | str) -> list[str]:
        return [m.text for m in self.sent if m.chat_id == str(chat_id)]

    @property
    def pending_update_count(self) -> int:
        return len(self._updates)

    @asynccontextmanager
    async def serve(self, *, binds: int = 1) -> AsyncIterator[FakeTelegram]:
        """Serve over HTTP on free loopback ports (``binds`` of them: ``urls``, and calls
        record the port they came to) for the duration of the block."""
        config = Config()
        config.bind = ["127.0.0.1:0"] * binds
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.1
        async with trio.open_nursery() as nursery:
            app: Any = self._asgi
            bound: list[str] = await nursery.start(partial(serve, app, config))
            self.ports = [int(b.rsplit(":", 1)[1]) for b in bound]
            self._port = self.ports[0]
            try:
                yield self
            finally:
                self._port = None
                nursery.cancel_scope.cancel()

    @property
    def urls(self) -> list[str]:
        """One URL per bound port (``serve(binds=...)``)."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    # -- the server ------------------------------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def handle(
        self, path: str, body: bytes, *, port: int | None = None
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        """Answer one HTTP call to ``path`` (``/bot<token>/<method>``); a str body is an HTML page."""
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        if match is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, {}
        if match.group(1) != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}
        method = match.group(2)
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            return (
                400,
                {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"},
                {},
            )
        if not isinstance(params, dict):
            params = {}
        self.calls.append(Call(method=method, params=params, at=trio.current_time(), port=port))
        if self.latency_s > 0:
            await trio.sleep(self.latency_s)
        queue = self.failures.get(method)
        failure = queue.popleft() if queue else None
        if failure is not None:
            if failure.hang:
                await trio.sleep_forever()
            headers = (
                {"retry-after": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            if failure.html is not None:
                return failure.status, failure.html, headers
            return failure.status, failure.body(), headers
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return (
                404,
                {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
                {},
            )
        if method == "getUpdates":
            if any(n > 0 for p, n in self.polling.items() if p != port):
                self.overlapping_polls += 1
            self.polling[port] = self.polling.get(port, 0) + 1
            try:
                status, result = await handler(params)
            finally:
                self.polling[port] -= 1
        else:
            status, result = await handler(params)
        if status != 200:
            assert isinstance(result, ApiFailure)
            headers = (
                {"retry-after": str(result.retry_after)} if result.retry_after is not None else {}
            )
            return status, result.body(), headers
        return 200, {"ok": True, "result": result}, {}

    async def _m_getMe(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        return 200, {
            "id": 222222222,
            "is_bot": True,
            "first_name": "Parish Bot",
            "username": "parish_bot",
        }

    async def _m_getUpdates(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        if self.webhook is not None:
            return 409, ApiFailure(
                status=409,
                description="Conflict: can't use getUpdates method "
                "while webhook is active; use deleteWebhook to delete the webhook first",
            )
        offset = params.get("offset")
        if isinstance(offset, int) and offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self.allowed_updates = [str(a) for a in allowed]
        timeout = min(max(int(params.get("timeout", 0) or 0), 0), 50)
        limit = min(max(int(params.get("limit", 100) or 100), 1), 100)
        self._poll_generation += 1
        generation = self._poll_generation
        if self._poll_generation > 1:
            self._wake()  # abort an older long poll
        with trio.move_on_after(timeout):
            while not self._deliverable():
                await self._changed.wait()
                if generation != self._poll_generation:
                    self.conflicts += 1
                    return 409, ApiFailure(
                        status=409,
                        description="Conflict: terminated by other "
                        "getUpdates request; make sure that only one bot instance is running",
                    )
                if self._webhook_active():
                    return 409, ApiFailure(
                        status=409, description="Conflict: terminated by setWebhook request"
                    )
        return 200, self._deliverable()[:limit]

    def _webhook_active(self) -> bool:
        return self.webhook is not None

    def _deliverable(self) -> list[dict[str, Any]]:
        if not self.allowed_updates:
            return list(self._updates)
        return [u for u in self._updates if any(k in u for k in self.allowed_updates)]

    async def _m_setWebhook(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        url = params.get("url")
        if not isinstance(url, str):
            return 400, ApiFailure(
                status=400, description="Bad Request: bad webhook: URL is missing"
            )
        secret = params.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or len(secret) > 256):
            return 400, ApiFailure(status=400, description="Bad Request: secret token is too long")
        if secret is not None and not _SECRET.match(secret):
            return 400, ApiFailure(
                status=400, description="Bad Request: secret token contains unallowed characters"
            )
        if params.get("drop_pending_updates"):
            self._updates.clear()
        if not url:
            self.webhook = None
            return 200, True
        self.webhook = dict(params)
        self._wake()
        return 200, True

    async def _m_deleteWebhook(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook = None
        return 200, True

    async def _m_getWebhookInfo(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook is not None:
            info["url"] = self.webhook["url"]
            info["max_connections"] = self.webhook.get("max_connections", 40)
            if self.webhook.get("allowed_updates") is not None:
                info["allowed_updates"] = self.webhook["allowed_updates"]
        return 200, info

    def _chat_error(self, chat_id: str) -> ApiFailure | None:
        if chat_id in self.blocked:
            return ApiFailure(status=403, description="Forbidden: bot was blocked by the user")
        if chat_id in self.deactivated:
            return ApiFailure(status=403, description="Forbidden: user is deactivated")
        if not re.fullmatch(r"-?\d{1,20}", chat_id):
            return ApiFailure(status=400, description="Bad Request: chat not found")
        return None

    async def _m_sendMessage(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        chat_id = str(params.get("chat_id", ""))
        error = self._chat_error(chat_id)
        if error is not None:
            return error.status, error
        raw = params.get("text")
        if not isinstance(raw, str) or not raw.strip():
            return 400, ApiFailure(status=400, description="Bad Request: message text is empty")
        parse_mode = params.get("parse_mode")
        text = raw
        if parse_mode == "HTML":
            text, problem = parse_html(raw)
            if problem is not None:
                return 400, ApiFailure(
                    status=400, description=f"Bad Request: can't parse entities: {problem}"
                )
        elif parse_mode is not None:
            return 400, ApiFailure(status=400, description="Bad Request: unsupported parse_mode")
        if len(raw.encode()) > 1 << 15:
            return 400, ApiFailure(status=400, description="Bad Request: text is too long")
        if utf16_len(text) > 4096:
            return 400, ApiFailure(status=400, description="Bad Request: message is too long")
        now = trio.current_time()
        last = self._last_sent_at.get(chat_id)
        if (
            self.flood_interval_s is not None
            and last is not None
            and now - last < self.flood_interval_s
        ):
            retry = max(1, math.ceil(self.flood_interval_s - (now - last)))
            failure = self.too_many_requests(retry_after=retry)
            return 429, failure
        self._last_sent_at[chat_id] = now
        message = SentMessage(
            message_id=next(self._message_ids),
            chat_id=chat_id,
            text=text,
            raw=raw,
            parse_mode=parse_mode if isinstance(parse_mode, str) else None,
            at=now,
        )
        self.sent.append(message)
        return 200, {
            "message_id": message.message_id,
            "date": 1_700_000_005,
            "text": text,
            "from": {"id": 222222222, "is_bot": True, "first_name": "Parish Bot"},
            "chat": {"id": int(chat_id), "type": "private"},
        }

    async def _m_sendChatAction(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        chat_id = str(params.get("chat_id", ""))
        error = self._chat_error(chat_id)
        if error is not None:
            return error.status, error
        if params.get("action") not in (
            "typing",
            "upload_photo",
            "record_voice",
            "upload_document",
        ):
            return 400, ApiFailure(
                status=400, description="Bad Request: wrong parameter action in request"
            )
        self.actions.append(
            Call(method="sendChatAction", params=dict(params), at=trio.current_time())
        )
        return 200, True

    # -- ASGI --------------------------------------------------------------------------------
    async def _asgi(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        server = scope.get("server") or (None, None)
        status, body, headers = await self.handle(scope["path"], b"".join(chunks), port=server[1])
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        kind = b"text/html" if isinstance(body, str) else b"application/json"
        raw_headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})


class _Transport(httpx2.AsyncBaseTransport):
    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        status, payload, headers = await self._fake.handle(request.url.path, body)
        if isinstance(payload, str):
            return httpx2.Response(status, text=payload, headers=headers, request=request)
        return httpx2.Response(status, json=payload, headers=headers, request=request)


# -- webhook delivery ------------------------------------------------------------------------
Poster = Callable[[bytes, Mapping[str, str]], Awaitable[tuple[int, Mapping[str, str]]]]


@attrs.frozen(kw_only=True)
class PushResult:
    update_id: int
    status: int  # the last answer; 0 for a connection error
    attempts: int


class WebhookPusher:
    """POST updates to a webhook like the Bot API server: per-chat head-of-line, retried.

    ``post(body, headers) -> (status, response_headers)`` performs one delivery; build one
    for a URL with ``WebhookPusher.for_url``. Delays are ``time_scale`` times Telegram's.
    """

    def __init__(
        self,
        *,
        post: Poster,
        secret: str | None,
        time_scale: float = 0.001,
        max_attempts: int = 50,
    ) -> None:
        self._post = post
        self._secret = secret
        self._scale = time_scale
        self._max_attempts = max_attempts
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._busy: set[str] = set()
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None
        self.results: list[PushResult] = []
        self.attempts = 0
        self.statuses: list[int] = []

    @staticmethod
    def for_url(url: str, client: httpx.AsyncClient) -> Poster:
        async def post(body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
            response = await client.post(url, content=body, headers=dict(headers))
            return response.status_code, response.headers

        return post

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WebhookPusher]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def push(self, update: Mapping[str, Any], *, queue: str | None = None) -> None:
        """Deliver ``update`` after the earlier ones of its chat (its own queue if it has no chat)."""
        if self._nursery is None:
            raise RuntimeError("use `async with pusher.running():`")
        key = queue or _queue_of(update)
        self._queues.setdefault(key, deque()).append(dict(update))
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        if key not in self._busy:
            self._busy.add(key)
            self._nursery.start_soon(self._drain_queue, key)

    async def drain(self) -> None:
        """Wait until every pushed update was acknowledged (or given up)."""
        await self._idle.wait()

    async def _drain_queue(self, key: str) -> None:
        queue = self._queues[key]
        while queue:
            update = queue[0]
            self.results.append(await self._deliver(update))
            queue.popleft()
        self._busy.discard(key)
        if not self._busy:
            self._idle.set()

    async def _deliver(self, update: Mapping[str, Any]) -> PushResult:
        body = json.dumps(update).encode()
        headers = {"content-type": "application/json"}
        if self._secret is not None:
            headers["x-telegram-bot-api-secret-token"] = self._secret
        delay = 1.0
        status = 0
        for attempt in range(1, self._max_attempts + 1):
            self.attempts += 1
            retry_after: float | None = None
            try:
                status, response_headers = await self._post(body, headers)
            except (httpx.TransportError, OSError):
                status = 0
            else:
                value = response_headers.get("retry-after")
                if value is not None:
                    try:
                        retry_after = min(max(float(value), 0.0), 3600.0)
                    except ValueError:
                        retry_after = None
            self.statuses.append(status)
            if 200 <= status < 300:
                return PushResult(
                    update_id=int(update["update_id"]), status=status, attempts=attempt
                )
            wait = retry_after if retry_after is not None else delay
            delay = min(delay * 2, 60.0)
            await trio.sleep(wait * self._scale)
        return PushResult(
            update_id=int(update["update_id"]), status=status, attempts=self._max_attempts
        )


def _queue_of(update: Mapping[str, Any]) -> str:
    for field in ("message", "edited_message", "channel_post", "edited_channel_post"):
        message = update.get(field)
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            return f"chat:{message['chat'].get('id')}"
    return f"update:{update.get('update_id')}"


def updates_for(fake: FakeTelegram, texts: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """Text-message updates for ``(user_id, text)`` pairs, in order."""
    return [fake.text_message(user_id=user, text=text) for user, text in texts]
