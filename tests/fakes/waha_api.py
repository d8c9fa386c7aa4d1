"""A loopback fake of WAHA: its REST API (sendText, sendSeen, typing, LID lookup) and its webhook sender.

``FakeWaha`` serves the REST side over real HTTP, checks ``X-Api-Key``, records
every call and answers scripted errors the way WAHA sends them::

    async with FakeWaha.serve(api_key="k") as waha:
        waha.push(FakeWaha.rate_limited(retry_after_s=3))          # next sendText
        waha.push(FakeWaha.server_error(), endpoint="sendSeen")
        ... WahaClient(base_url=waha.url, api_key="k", ...) ...
        assert waha.calls() == [("sendSeen", "336...@c.us"), ("startTyping", ...), ...]

``WahaWebhookPusher`` plays WAHA's webhook sender: it serialises an event the way
``JSON.stringify`` does, signs it (HMAC-SHA512, hex), sets the ``X-Webhook-*``
headers once per delivery and retries with WAHA's policies (constant, linear,
exponential with jitter; delays compressed by ``time_scale``), honouring
``Retry-After`` as ``max(delay, retry_after)``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx
import trio

from tests.fakes.llm_common import Received, Route, Scripted, ScriptedServer

__all__ = [
    "Attempt",
    "Delivery",
    "FakeWaha",
    "RetryPolicy",
    "WahaWebhookPusher",
    "message_event",
    "raw_message_id",
]

_ids = itertools.count(1)
_POSTS = {"sendText", "sendSeen", "startTyping", "stopTyping"}


def raw_message_id() -> str:
    """A WhatsApp message id as the phone makes them: 20 upper-case hex digits."""
    return uuid.uuid4().hex[:20].upper()


class FakeWaha(ScriptedServer):
    main_endpoint = "sendText"

    def __init__(
        self,
        *,
        api_key: str | None = "waha-test-key",
        session: str = "default",
        me: str = "33100000000@c.us",
        lids: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__()
        self.default = Scripted(status=201)
        self.api_key = api_key
        self.session = session
        self.me = me
        self.lids: dict[str, str | None] = dict(lids or {})
        self.session_status: str | None = "WORKING"

    # -- wire format --------------------------------------------------------------------
    def route(self, method: str, path: str) -> Route | None:
        parts = [p for p in path.split("/") if p]
        if method == "POST" and len(parts) == 2 and parts[0] == "api" and parts[1] in _POSTS:
            return Route(endpoint=parts[1])
        if method == "GET" and len(parts) == 4 and parts[0] == "api" and parts[2] == "lids":
            return Route(endpoint="lids", path_args={"session": parts[1], "lid": parts[3]})
        if method == "GET" and len(parts) == 3 and parts[:2] == ["api", "sessions"]:
            return Route(endpoint="session", path_args={"session": parts[2]})
        return None

    def key_of(self, headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
        return headers.get("x-api-key")

    def not_found_body(self, path: str) -> Any:
        return {"message": f"Cannot GET {path}", "error": "Not Found", "statusCode": 404}

    def success_body(self, reply: Scripted, request: Received) -> Any:
        payload = request.json or {}
        chat_id = payload.get("chatId", "")
        return {
            "id": f"true_{chat_id}_{raw_message_id()}",
            "timestamp": int(time.time()),
            "from": self.me,
            "fromMe": True,
            "source": "api",
            "to": chat_id,
            "body": payload.get("text", ""),
            "hasMedia": False,
            "ack": 1,
            "ackName": "SERVER",
        }

    def answer_other(self, request: Received) -> tuple[int, Any, Mapping[str, str]] | None:
        if request.endpoint in ("sendSeen", "startTyping", "stopTyping"):
            return 201, {}, {}
        if request.endpoint == "lids":
            lid = request.path_args["lid"]
            return 200, {"lid": lid, "pn": self.lids.get(lid)}, {}
        if request.endpoint == "session":
            body = {"name": request.path_args["session"]}
            if self.session_status is not None:  # None: an answer without a status
                body["status"] = self.session_status
            return 200, body, {}
        return None

    async def _answer(self, request: Received) -> tuple[int, bytes, dict[str, str]]:
        """WAHA's own checks come first: the API key, then the request body."""
        problem = self._refusal(request)
        if problem is not None:
            status, body = problem
            return status, json.dumps(body).encode(), {"content-type": "application/json"}
        return await super()._answer(request)

    def _refusal(self, request: Received) -> tuple[int, Any] | None:
        if self.api_key is not None and request.key != self.api_key:
            return 401, {"message": "Unauthorized", "statusCode": 401}
        if request.method != "POST":
            return None
        payload = request.json
        if not isinstance(payload, dict) or not isinstance(payload.get("chatId"), str):
            return 400, {
                "message": ["chatId must be a string"],
                "error": "Bad Request",
                "statusCode": 400,
            }
        if payload.get("session") != self.session:
            return 422, {
                "message": f"We didn't find a session with name '{payload.get('session')}'",
                "error": "Unprocessable Entity",
                "statusCode": 422,
            }
        if request.endpoint == "sendText" and not isinstance(payload.get("text"), str):
            return 400, {
                "message": ["text must be a string"],
                "error": "Bad Request",
                "statusCode": 400,
            }
        return None

    # -- what tests read -----------------------------------------------------------------
    def calls(self) -> list[tuple[str, str | None]]:
        """``(endpoint, chatId)`` of every request, in arrival order."""
        return [
            (r.endpoint, r.json.get("chatId") if isinstance(r.json, dict) else None)
            for r in self.requests
        ]

    def texts(self) -> list[str]:
        """The texts of every ``sendText`` request (including refused ones), in order."""
        return [r.json["text"] for r in self.requests_to("sendText") if isinstance(r.json, dict)]

    # -- scripted answers, as WAHA sends them ------------------------------------------
    @staticmethod
    def rate_limited(*, retry_after_s: float | None = None) -> Scripted:
        headers = {"retry-after": f"{retry_after_s:g}"} if retry_after_s is not None else {}
        return Scripted(
            status=429,
            headers=headers,
            body={"statusCode": 429, "message": "ThrottlerException: Too Many Requests"},
        )

    @staticmethod
    def server_error(message: str = "2 UNKNOWN: server returned error 463") -> Scripted:
        return Scripted(
            status=500,
            body={
                "statusCode": 500,
                "timestamp": "2026-01-01T00:00:00.000Z",
                "exception": {"message": message, "name": "Error"},
            },
        )

    @staticmethod
    def session_not_working(status: str = "STARTING") -> Scripted:
        return Scripted(
            status=422,
            body={
                "error": "Session status is not as expected. Try again later or restart the session",
                "session": "default",
                "status": status,
                "expected": ["WORKING"],
            },
        )

    @staticmethod
    def bad_request(message: str = "chatId must be a valid WhatsApp id") -> Scripted:
        return Scripted(
            status=400, body={"message": [message], "error": "Bad Request", "statusCode": 400}
        )


# -- the webhook side --------------------------------------------------------------------------
def message_event(
    *,
    chat_id: str = "33612345678@c.us",
    text: str | None = "Bonjour, à quelle heure est la messe dimanche ?",
    message_id: str | None = None,
    from_me: bool = False,
    source: str = "app",
    event: str = "message",
    session: str = "default",
    has_media: bool = False,
    participant: str | None = None,
    data: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp_ms: int | None = None,
    engine: str = "WEBJS",
) -> dict[str, Any]:
    """A ``message`` event envelope shaped like WAHA's (``payload.id`` = ``{fromMe}_{chat}_{raw}``)."""
    now_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    payload: dict[str, Any] = {
        "id": message_id or f"{str(from_me).lower()}_{chat_id}_{raw_message_id()}",
        "timestamp": now_ms // 1000,
        "from": chat_id,
        "fromMe": from_me,
        "source": source,
        "to": "33100000000@c.us",
        "participant": participant,
        "body": text,
        "hasMedia": has_media,
        "media": {
            "url": "http://127.0.0.1:3000/api/files/x.jpg",
            "mimetype": "image/jpeg",
            "filename": None,
            "error": None,
        }
        if has_media
        else None,
        "ack": 1,
        "ackName": "SERVER",
        "replyTo": None,
        "_data": dict(data or {}),
    }
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:26]}",
        "timestamp": now_ms,
        "session": session,
        "metadata": {},
        "engine": engine,
        "event": event,
        "payload": payload,
        "me": {"id": "33100000000@c.us", "pushName": "Paroisse"},
        "environment": {"version": "2026.5.1", "engine": engine, "tier": "CORE", "browser": None},
    }


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """WAHA's ``retries`` config; ``time_scale`` compresses every wait for tests."""

    policy: str = "constant"
    delay_s: float = 2.0
    attempts: int = 15
    time_scale: float = 0.001

    def delay_before_retry(self, retry: int, rng: random.Random) -> float:
        """Seconds (uncompressed) before retry number ``retry`` (1-based)."""
        if self.policy == "constant":
            return self.delay_s
        if self.policy == "linear":
            return self.delay_s * retry
        if self.policy == "exponential":
            return self.delay_s * 2.0 ** (retry - 1) * (1 + rng.uniform(0, 0.2))
        raise ValueError(f"unknown retry policy {self.policy!r} (constant, linear, exponential)")


@attrs.frozen(kw_only=True)
class Attempt:
    status: int | None  # None: no HTTP answer (connection refused, timeout)
    retry_after: str | None = None
    body: bytes = b""


@attrs.frozen(kw_only=True)
class Delivery:
    request_id: str
    timestamp_ms: int
    attempts: tuple[Attempt, ...]

    @property
    def delivered(self) -> bool:
        last = self.attempts[-1].status if self.attempts else None
        return last is not None and 200 <= last < 300

    @property
    def statuses(self) -> list[int | None]:
        return [a.status for a in self.attempts]


Post = Callable[[bytes, dict[str, str]], Awaitable[Attempt]]


class WahaWebhookPusher:
    """Delivers events like WAHA's webhook sender: signed, retried, headers fixed per delivery."""

    def __init__(
        self,
        *,
        post: Post,
        hmac_key: str | None,
        policy: RetryPolicy | None = None,
        clock_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._post = post
        self.hmac_key = hmac_key
        self.policy = policy or RetryPolicy()
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._rng = rng or random.Random(7)
        self.deliveries: list[Delivery] = []

    @classmethod
    def over_http(cls, http: httpx.AsyncClient, url: str, **kwargs: Any) -> WahaWebhookPusher:
        async def post(body: bytes, headers: dict[str, str]) -> Attempt:
            try:
                response = await http.post(url, content=body, headers=headers)
            except httpx.TransportError:
                return Attempt(status=None)
            return Attempt(
                status=response.status_code,
                retry_after=response.headers.get("retry-after"),
                body=response.content,
            )

        return cls(post=post, **kwargs)

    @classmethod
    def over_test_client(
        cls, client: Any, path: str = "/webhooks/waha", **kwargs: Any
    ) -> WahaWebhookPusher:
        """Deliver through a Quart test client (``app.test_client()``)."""

        async def post(body: bytes, headers: dict[str, str]) -> Attempt:
            response = await client.post(path, data=body, headers=headers)
            return Attempt(
                status=response.status_code,
                retry_after=response.headers.get("Retry-After"),
                body=await response.get_data(),
            )

        return cls(post=post, **kwargs)

    @staticmethod
    def encode(event: Mapping[str, Any]) -> bytes:
        """The body bytes as ``JSON.stringify`` writes them (compact, non-ASCII kept).

        Lone surrogates, which ``JSON.stringify`` writes as ``\\udxxx`` escapes, make the
        whole body ASCII-escaped here: still the same JSON value.
        """
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(event, separators=(",", ":")).encode("ascii")

    def headers_for(self, body: bytes, *, request_id: str, timestamp_ms: int) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "user-agent": "WAHA/2026.5.1",
            "x-webhook-request-id": request_id,
            "x-webhook-timestamp": str(timestamp_ms),
        }
        if self.hmac_key is not None:
            headers["x-webhook-hmac"] = hmac.new(
                self.hmac_key.encode(), body, hashlib.sha512
            ).hexdigest()
            headers["x-webhook-hmac-algorithm"] = "sha512"
        return headers

    async def deliver(self, event: Mapping[str, Any], *, request_id: str | None = None) -> Delivery:
        """One webhook ``send()``: the same request id and timestamp on every retry."""
        body = self.encode(event)
        stamp = event.get("timestamp")
        timestamp_ms = stamp if isinstance(stamp, int) else self._clock_ms()
        rid = request_id or f"{next(_ids):04d}{uuid.uuid4().hex[:9]}"
        headers = self.headers_for(body, request_id=rid, timestamp_ms=timestamp_ms)
        attempts: list[Attempt] = []
        for number in range(1, self.policy.attempts + 1):
            attempt = await self._post(body, headers)
            attempts.append(attempt)
            if attempt.status is not None and 200 <= attempt.status < 300:
                break
            if number == self.policy.attempts:
                break
            delay = self.policy.delay_before_retry(number, self._rng)
            hinted = _seconds(attempt.retry_after)
            await trio.sleep(max(delay, hinted or 0.0) * self.policy.time_scale)
        delivery = Delivery(request_id=rid, timestamp_ms=timestamp_ms, attempts=tuple(attempts))
        self.deliveries.append(delivery)
        return delivery


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
