"""``POST /webhooks/waha``: verify the signature over the raw body, parse, commit to the inbox, ack.

A delivery is acknowledged (200) only once its inbox row is committed, or when it
needs no answer (another event type, our own echo, a group); a duplicate is a 200
too, and so is a message its user had erased (``concierge forget``), not stored again. Bad signatures get 401 and leave no trace in the inbox; a signed body we
cannot read gets 400; a store that is down gets 503 with ``Retry-After``, which
WAHA's retry policy honours.

On the WAHA side: ``WHATSAPP_HOOK_URL=https://<host>/webhooks/waha``,
``WHATSAPP_HOOK_EVENTS=message`` (not ``message.any`` as well: every message would
come twice), ``WHATSAPP_HOOK_HMAC_KEY`` equal to ``WAHA_WEBHOOK_HMAC_KEY``, and a retry
span (attempts x delay) shorter than ``WAHA_TIMESTAMP_WINDOW_S``: freshness is the
event's own signed ``timestamp``, which retries keep.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog
from prometheus_client.core import CounterMetricFamily, Metric
from quart import Blueprint, Response, jsonify, request

from concierge.channels.waha_signature import verify_delivery
from concierge.channels.waha_wire import (
    HEADER_REQUEST_ID,
    Ignored,
    ParsedMessage,
    Rejected,
    parse_envelope,
)
from concierge.domain import Ingest
from concierge.observability import Check, Status
from concierge.protocol import Channel, new_correlation_id
from concierge.settings import SettingsError, WahaSettings
from concierge.store import Identities, StoreUnavailable

__all__ = ["WahaWebhookStats", "link_alt_identity", "waha_blueprint", "waha_startup_checks"]

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/waha"
STORE_RETRY_AFTER_S = 5


def waha_startup_checks(settings: WahaSettings) -> None:
    """Refuse unsigned webhooks unless explicitly allowed, and say so loudly at every start."""
    if settings.hmac_key is None:
        if not settings.allow_unsigned:
            raise SettingsError(
                "WAHA_WEBHOOK_HMAC_KEY",
                "the WAHA channel refuses unsigned webhooks: set the HMAC key (or WAHA_ALLOW_UNSIGNED=true, not for production)",
            )
        log.warning(
            "waha.unsigned_webhooks_allowed",
            hint="anyone who can reach /webhooks/waha can inject messages; set WAHA_WEBHOOK_HMAC_KEY",
        )
    if settings.api_key is None:
        log.warning(
            "waha.api_key_missing",
            hint="WAHA's API should require X-Api-Key (WAHA_API_KEY); an open WAHA gets the number banned",
        )


class WahaWebhookStats:
    """Counts deliveries by outcome and reason, for ``/metrics`` and ``/health``."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def count(self, outcome: str, reason: str = "") -> None:
        self.counts[(outcome, reason)] += 1

    def total(self, outcome: str) -> int:
        return sum(n for (o, _), n in self.counts.items() if o == outcome)

    def health_checks(self) -> Iterable[Check]:
        details = {
            o: self.total(o)
            for o in ("accepted", "duplicate", "ignored", "rejected", "unavailable")
        }
        yield Check(
            component="waha",
            measurement="webhooks",
            status=Status.PASS,
            observed_value=details["accepted"],
            observed_unit="messages",
            details={"deliveries": details},
        )

    def metrics(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "concierge_waha_webhooks",
            "WAHA webhook deliveries by outcome and reason",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), n in sorted(self.counts.items()):
            family.add_metric([outcome, reason], n)
        yield family


async def link_alt_identity(
    store: Identities, *, user_key: str, alt_user_key: str, display_name: str | None
) -> None:
    """Make the phone id and the ``@lid`` of one person the same user.

    Whichever identity is known already keeps its user and gains the other; when both
    are known as different users they are left apart (merging users is a staff
    decision) and a warning says so.
    """
    known = await store.user_for_key(user_key)
    other = await store.user_for_key(alt_user_key)
    if known is not None and other is not None:
        if known.user_id != other.user_id:
            log.warning(
                "waha.identities_conflict", user_id=known.user_id, other_user_id=other.user_id
            )
        return
    if known is not None:
        await store.link_identity(known.user_id, Channel.WAHA, alt_user_key)
    elif other is not None:
        await store.link_identity(other.user_id, Channel.WAHA, user_key)
    else:
        user_id = await store.resolve_user(Channel.WAHA, user_key, display_name=display_name)
        await store.link_identity(user_id, Channel.WAHA, alt_user_key)
    log.info("waha.identity_linked")


def waha_blueprint(
    *,
    ingest: Ingest,
    settings: WahaSettings,
    store: Identities,
    clock: Callable[[], float] = time.time,
    stats: WahaWebhookStats | None = None,
) -> Blueprint:
    """The blueprint serving ``POST /webhooks/waha``; ``clock`` gives wall time in seconds."""
    counts = stats if stats is not None else WahaWebhookStats()
    blueprint = Blueprint("waha", __name__)

    @blueprint.post(WEBHOOK_PATH)
    async def receive_waha_webhook() -> Response:
        data = await request.get_data(cache=False, as_text=False)
        body = data if isinstance(data, bytes) else data.encode("utf-8")
        request_id = request.headers.get(HEADER_REQUEST_ID, "")[:64]
        now_s = clock()
        rejection = verify_delivery(
            body=body,
            headers=dict(request.headers.items()),
            hmac_key=settings.hmac_key,
            now_s=now_s,
            window_s=settings.timestamp_window_s,
        )
        if rejection is not None:
            return _rejected(rejection, counts, request_id)
        correlation_id = new_correlation_id()
        result = parse_envelope(
            body,
            session=settings.session,
            allow_groups=settings.allow_groups,
            received_at=datetime.fromtimestamp(now_s, UTC),
            correlation_id=correlation_id,
            staff_chat_id=settings.staff_chat_id,
        )
        if isinstance(result, Rejected):
            return _rejected(result, counts, request_id)
        if isinstance(result, Ignored):
            counts.count("ignored", result.reason.value)
            log.debug("waha.webhook_ignored", reason=result.reason.value, request_id=request_id)
            return _json({"status": "ignored", "reason": result.reason.value}, 200)
        return await _accept(
            result, ingest=ingest, store=store, counts=counts, request_id=request_id
        )

    return blueprint


async def _accept(
    parsed: ParsedMessage,
    *,
    ingest: Ingest,
    store: Identities,
    counts: WahaWebhookStats,
    request_id: str,
) -> Response:
    message = parsed.message
    log_ = log.bind(
        correlation_id=message.correlation_id, request_id=request_id, event_id=parsed.event_id
    )
    try:
        if parsed.alt_user_key is not None:
            await _link_best_effort(store, parsed, log_)
        accepted = await ingest.accept(message)
    except StoreUnavailable as exc:
        counts.count("unavailable")
        log_.warning("waha.webhook_deferred", error=str(exc), retry_after_s=STORE_RETRY_AFTER_S)
        response = _json({"error": "the inbox is unavailable, retry later"}, 503)
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
        return response
    outcome = "accepted" if accepted.is_new else accepted.status.value
    counts.count(outcome, message.kind.value)
    log_.info(
        "waha.webhook_accepted",
        outcome=outcome,
        inbox_id=accepted.inbox_id,
        kind=message.kind.value,
    )
    return _json({"status": outcome, "inbox_id": accepted.inbox_id}, 200)


async def _link_best_effort(
    store: Identities, parsed: ParsedMessage, log_: structlog.typing.FilteringBoundLogger
) -> None:
    """Linking LID and phone helps, but never costs a message: only an unavailable store stops it."""
    assert parsed.alt_user_key is not None
    try:
        await link_alt_identity(
            store,
            user_key=parsed.message.user_key,
            alt_user_key=parsed.alt_user_key,
            display_name=parsed.message.display_name,
        )
    except StoreUnavailable:
        raise
    except Exception as exc:
        log_.warning("waha.identity_link_failed", error=f"{type(exc).__name__}: {exc}")


def _rejected(rejection: Rejected, counts: WahaWebhookStats, request_id: str) -> Response:
    counts.count("rejected", rejection.reason.value)
    log.warning(
        "waha.webhook_rejected",
        reason=rejection.reason.value,
        detail=rejection.detail,
        request_id=request_id,
    )
    return _json(
        {"error": rejection.detail, "reason": rejection.reason.value}, rejection.http_status
    )


def _json(payload: dict[str, object], status: int) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response
