"""``POST /webhooks/telegram``: check the secret, commit the update to the inbox, answer fast.

Telegram retries every non-2xx answer and holds back the chat's later updates until
it succeeds, so the answers are chosen for that: 200 once the inbox row is committed
(a duplicate too) and for updates the concierge ignores; 503 with ``Retry-After`` when
the store is down (Telegram comes back); 401/403 for a missing/wrong secret, checked
with ``hmac.compare_digest`` before the body is read; 415 for a body that is not
declared JSON; 400 for a body that is not an Update (a retry cannot fix it; it is
logged and counted); 408, and the connection closed, for a body that takes longer
than the read timeout to arrive (a trickled body would hold a connection forever).
``with_telegram_webhook`` answers the route in bare ASGI in front of the app: Quart's
request machinery was most of the cost of an ack, and without it the route acks
about twice as fast.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from concierge.channels.telegram_wire import Ignored, MalformedUpdate, parse_update_body
from concierge.domain import Ingest
from concierge.observability import Check, LatencyHistogram, Status
from concierge.store import StoreUnavailable

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/webhooks/telegram"


class TelegramWebhookStats:
    """Counts of what the webhook answered; an ``Observable`` for ``/health`` and ``/metrics``."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.ignored: dict[str, int] = {}
        self.unauthorized = 0
        self.malformed = 0
        self.unsupported = 0
        self.timed_out = 0
        self.unavailable = 0
        self.failed = 0
        self.latency = LatencyHistogram()
        """Each answered request's handling time, secret check to answer."""

    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="telegram",
            measurement="webhook",
            status=Status.WARN if self.unavailable or self.failed else Status.PASS,
            observed_value=self.accepted,
            observed_unit="updates",
            details={
                "duplicates": self.duplicates,
                "ignored": sum(self.ignored.values()),
                "unauthorized": self.unauthorized,
                "malformed": self.malformed,
                "unsupported": self.unsupported,
                "timed_out": self.timed_out,
                "unavailable": self.unavailable,
            },
        )

    def metrics(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "concierge_telegram_webhook_updates",
            "Telegram webhook requests by outcome",
            labels=["outcome", "reason"],
        )
        family.add_metric(["accepted", ""], self.accepted)
        family.add_metric(["duplicate", ""], self.duplicates)
        for reason, count in sorted(self.ignored.items()):
            family.add_metric(["ignored", reason], count)
        family.add_metric(["unauthorized", ""], self.unauthorized)
        family.add_metric(["malformed", ""], self.malformed)
        family.add_metric(["unsupported_media_type", ""], self.unsupported)
        family.add_metric(["timed_out", ""], self.timed_out)
        family.add_metric(["unavailable", ""], self.unavailable)
        family.add_metric(["failed", ""], self.failed)
        yield family
        latency = HistogramMetricFamily(
            "concierge_telegram_webhook_duration_seconds",
            "Time from request to answer on the webhook",
        )
        latency.add_metric([], self.latency.buckets(), self.latency.sum)
        yield latency


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``), in any case."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _matches(candidate: str, secrets: Sequence[bytes]) -> bool:
    # Secrets are ASCII [A-Za-z0-9_-]; any other byte in the header can never match.
    given = candidate.encode("utf-8", "replace")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret)
    return found


@attrs.frozen(kw_only=True)
class Answer:
    status: int
    error: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def body(self) -> bytes:
        return b"" if self.error is None else json.dumps({"error": self.error}).encode()


class TelegramWebhook:
    """What the route does, independent of the framework serving it.

    ``handle`` takes the secret and content type headers first and reads the body only
    once they are right.
    """

    def __init__(
        self,
        *,
        ingest: Ingest,
        secret: str,
        previous_secrets: Sequence[str] = (),
        stats: TelegramWebhookStats | None = None,
        retry_after_s: int = 5,
        staff_chat_id: str | None = None,
    ) -> None:
        if not secret:
            raise ValueError("TELEGRAM_WEBHOOK_SECRET must not be empty in webhook mode")
        self._ingest = ingest
        self._secrets = [s.encode() for s in (secret, *previous_secrets) if s]
        self.stats = stats if stats is not None else TelegramWebhookStats()
        self._retry_after_s = retry_after_s
        self._staff_chat_id = staff_chat_id

    async def handle(
        self,
        given: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        *,
        content_type: str | None = "application/json",
    ) -> Answer:
        started = time.perf_counter()
        try:
            return await self._handle(given, read_body, content_type)
        finally:
            self.stats.latency.observe(time.perf_counter() - started)

    async def _handle(
        self, given: str | None, read_body: Callable[[], Awaitable[bytes]], content_type: str | None
    ) -> Answer:
        counts = self.stats
        if given is None:
            counts.unauthorized += 1
            log.warning("telegram.webhook_unauthorized", reason="missing_secret")
            return Answer(status=401, error="missing X-Telegram-Bot-Api-Secret-Token")
        if not _matches(given, self._secrets):
            counts.unauthorized += 1
            log.warning("telegram.webhook_unauthorized", reason="wrong_secret")
            return Answer(status=403, error="wrong X-Telegram-Bot-Api-Secret-Token")
        if not _is_json(content_type):
            counts.unsupported += 1
            log.warning("telegram.update_rejected", reason="not_json", content_type=content_type)
            return Answer(status=415, error="the body must be application/json")
        body = await read_body()
        try:
            parsed = parse_update_body(body, staff_chat_id=self._staff_chat_id)
        except MalformedUpdate as exc:
            counts.malformed += 1
            log.warning("telegram.update_rejected", reason=str(exc), body_bytes=len(body))
            return Answer(status=400, error=f"not a Telegram Update: {exc}")
        if isinstance(parsed, Ignored):
            counts.ignored[parsed.reason] = counts.ignored.get(parsed.reason, 0) + 1
            log.debug("telegram.update_ignored", update_id=parsed.update_id, reason=parsed.reason)
            return Answer(status=200)
        log_ = log.bind(correlation_id=parsed.correlation_id, update_id=parsed.external_id)
        try:
            accepted = await self._ingest.accept(parsed)
        except StoreUnavailable as exc:
            counts.unavailable += 1
            log_.warning("telegram.webhook_deferred", reason=str(exc))
            return Answer(
                status=503,
                error="store unavailable, retry later",
                headers={"Retry-After": str(self._retry_after_s)},
            )
        except Exception:
            counts.failed += 1
            log_.exception("telegram.webhook_failed")
            return Answer(status=500, error="internal error")
        if accepted.is_new:
            counts.accepted += 1
        else:
            counts.duplicates += 1
        log_.info(
            "telegram.webhook_accepted",
            outcome="accepted" if accepted.is_new else accepted.status.value,
            inbox_id=accepted.inbox_id,
            kind=parsed.kind.value,
        )
        return Answer(status=200)


# -- the route as bare ASGI, mounted in front of the app -----------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # loose, so Quart apps and Hypercorn's types both fit


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


Observe = Callable[[str, str, int, float], None]
"""``(route, method, status, seconds)`` of one answered request, for the request metrics."""


def with_telegram_webhook(
    app: ASGIApp,
    *,
    ingest: Ingest,
    secret: str,
    previous_secrets: Sequence[str] = (),
    stats: TelegramWebhookStats | None = None,
    retry_after_s: int = 5,
    staff_chat_id: str | None = None,
    max_body_bytes: int = 1 << 20,
    body_timeout_s: float = 10.0,
    path: str = WEBHOOK_PATH,
    observe: Observe | None = None,
) -> ASGIApp:
    """``app`` with ``POST path`` answered by the webhook directly, without the framework.

    ``previous_secrets`` stay valid while a new secret is rolled out. Every other
    request goes to ``app``. Bodies over ``max_body_bytes`` get 413, bodies still
    arriving after ``body_timeout_s`` 408; ``observe`` counts each answer with the
    app's own requests.
    """
    webhook = TelegramWebhook(
        ingest=ingest,
        secret=secret,
        previous_secrets=previous_secrets,
        stats=stats,
        retry_after_s=retry_after_s,
        staff_chat_id=staff_chat_id,
    )

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != path:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = await _answer(
            webhook,
            scope,
            receive,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout_s,
        )
        if answer is None:
            return
        if observe is not None:
            observe(path, scope["method"], answer.status, time.perf_counter() - started)
        await _respond(send, answer)

    return route


_HEADER = SECRET_HEADER.lower().encode()


async def _answer(
    webhook: TelegramWebhook,
    scope: Scope,
    receive: Receive,
    *,
    max_body_bytes: int,
    body_timeout_s: float,
) -> Answer | None:
    """The answer to send; ``None`` when the client went away."""
    if scope["method"] != "POST":
        return Answer(
            status=405, error="method not allowed on this route", headers={"Allow": "POST"}
        )
    headers = {k: v.decode("latin-1") for k, v in scope["headers"]}

    async def read_body_in_time() -> bytes:
        with trio.fail_after(body_timeout_s):
            return await _read_body(receive, max_body_bytes)

    try:
        return await webhook.handle(
            headers.get(_HEADER), read_body_in_time, content_type=headers.get(b"content-type")
        )
    except _TooLarge:
        return Answer(status=413, error=f"request body larger than {max_body_bytes} bytes")
    except trio.TooSlowError:
        webhook.stats.timed_out += 1
        log.warning("telegram.webhook_timed_out", body_timeout_s=body_timeout_s)
        return Answer(
            status=408,
            error=f"the body did not arrive within {body_timeout_s:g} s",
            headers={"Connection": "close"},
        )
    except _Disconnected:
        return None


async def _read_body(receive: Receive, max_body_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, answer: Answer) -> None:
    body = answer.body()
    headers = [(b"content-length", str(len(body)).encode())]
    if answer.error is not None:
        headers.append((b"content-type", b"application/json"))
    headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
