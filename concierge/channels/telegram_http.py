"""``POST /webhooks/telegram``: check the secret, commit the update to the inbox, answer fast.

Telegram retries every non-2xx answer and holds back the chat's later updates until
it succeeds, so the answers are chosen for that: 200 once the inbox row is committed
(a duplicate too) and for updates the concierge ignores; 503 with ``Retry-After`` when
the store is down (Telegram comes back); 401/403 for a missing/wrong secret, checked
with ``hmac.compare_digest`` before the body is read; 400 for a body that is not an
Update (a retry cannot fix it; it is logged and counted).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Sequence

import structlog
from prometheus_client.core import CounterMetricFamily, Metric
from quart import Blueprint, Response, request

from concierge.channels.telegram import Ignored, MalformedUpdate, parse_update_body
from concierge.ingest import Ingest
from concierge.observability import Check, Status
from concierge.store.errors import StoreUnavailable

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramWebhookStats:
    """Counts of what the webhook answered; an ``Observable`` for ``/health`` and ``/metrics``."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.ignored: dict[str, int] = {}
        self.unauthorized = 0
        self.malformed = 0
        self.unavailable = 0
        self.failed = 0

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
        family.add_metric(["unavailable", ""], self.unavailable)
        family.add_metric(["failed", ""], self.failed)
        yield family


def _matches(candidate: str, secrets: Sequence[bytes]) -> bool:
    # Secrets are ASCII [A-Za-z0-9_-]; any other byte in the header can never match.
    given = candidate.encode("utf-8", "replace")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret)
    return found


def telegram_blueprint(
    *,
    ingest: Ingest,
    secret: str,
    previous_secrets: Sequence[str] = (),
    stats: TelegramWebhookStats | None = None,
    retry_after_s: int = 5,
    path: str = "/webhooks/telegram",
) -> Blueprint:
    """The webhook route; ``previous_secrets`` stay valid while a new secret is rolled out."""
    if not secret:
        raise ValueError("TELEGRAM_WEBHOOK_SECRET must not be empty in webhook mode")
    secrets = [s.encode() for s in (secret, *previous_secrets) if s]
    counts = stats if stats is not None else TelegramWebhookStats()
    blueprint = Blueprint("telegram_webhook", __name__)

    def answer(status: int, error: str | None = None, **headers: str) -> Response:
        if error is None:
            return Response("", status=status, headers=headers)
        return Response(
            json.dumps({"error": error}), status=status, content_type="application/json", headers=headers
        )

    @blueprint.post(path)
    async def telegram_webhook() -> Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            counts.unauthorized += 1
            log.warning("telegram.webhook_unauthorized", reason="missing_secret")
            return answer(401, "missing X-Telegram-Bot-Api-Secret-Token")
        if not _matches(given, secrets):
            counts.unauthorized += 1
            log.warning("telegram.webhook_unauthorized", reason="wrong_secret")
            return answer(403, "wrong X-Telegram-Bot-Api-Secret-Token")
        data = await request.get_data(cache=False, as_text=False)
        body = data.encode() if isinstance(data, str) else data
        try:
            parsed = parse_update_body(body)
        except MalformedUpdate as exc:
            counts.malformed += 1
            log.warning("telegram.update_rejected", reason=str(exc), body_bytes=len(body))
            return answer(400, f"not a Telegram Update: {exc}")
        if isinstance(parsed, Ignored):
            counts.ignored[parsed.reason] = counts.ignored.get(parsed.reason, 0) + 1
            log.debug("telegram.update_ignored", update_id=parsed.update_id, reason=parsed.reason)
            return answer(200)
        log_ = log.bind(correlation_id=parsed.correlation_id, update_id=parsed.external_id)
        try:
            accepted = await ingest.accept(parsed)
        except StoreUnavailable as exc:
            counts.unavailable += 1
            log_.warning("telegram.webhook_deferred", reason=str(exc))
            return answer(503, "store unavailable, retry later", **{"Retry-After": str(retry_after_s)})
        except Exception:
            counts.failed += 1
            log_.exception("telegram.webhook_failed")
            return answer(500, "internal error")
        if accepted.is_new:
            counts.accepted += 1
        else:
            counts.duplicates += 1
        return answer(200)

    return blueprint
