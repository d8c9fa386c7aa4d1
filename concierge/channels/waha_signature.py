"""WAHA webhook authenticity: the HMAC over the raw body, and freshness from the signed body.

Freshness is checked against the event's own timestamp inside the body (what the HMAC
covers), never the ``X-Webhook-Timestamp`` header, which is not signed: a captured
delivery re-sent with a fresh header would pass a check on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from concierge.channels.waha_wire import Rejected, RejectReason, shown

__all__ = ["FUTURE_SKEW_S", "HMAC_ALGORITHM", "sign", "verify_delivery"]

HMAC_ALGORITHM = "sha512"
HEADER_HMAC = "x-webhook-hmac"
HEADER_ALGORITHM = "x-webhook-hmac-algorithm"
FUTURE_SKEW_S = 60.0


# -- verification -----------------------------------------------------------------------------
def sign(body: bytes, key: str) -> str:
    """WAHA's signature: hex HMAC-SHA512 of the exact body bytes with the key's UTF-8 bytes."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha512).hexdigest()


def verify_delivery(
    *,
    body: bytes,
    headers: Mapping[str, str],
    hmac_key: str | None,
    now_s: float,
    window_s: float,
    future_skew_s: float = FUTURE_SKEW_S,
) -> Rejected | None:
    """``None`` when the delivery is authentic and fresh, else why not.

    With a key, ``X-Webhook-Hmac`` (lower-case hex of HMAC-SHA512 over the raw body)
    and ``X-Webhook-Hmac-Algorithm: sha512`` are required, and a ``message`` event must
    carry its time in the signed body: the envelope's ``timestamp`` (ms) or, from WAHA
    builds older than it, ``payload.timestamp`` (s). Without a key (unsigned mode) only
    a timestamp that is present is checked. A body that is not JSON passes here and is
    refused by ``parse_envelope``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if hmac_key is not None:
        provided = lowered.get(HEADER_HMAC)
        if not provided:
            return Rejected(
                reason=RejectReason.SIGNATURE_MISSING, detail="X-Webhook-Hmac header is missing"
            )
        algorithm = lowered.get(HEADER_ALGORITHM)
        if algorithm != HMAC_ALGORITHM:
            quoted = "missing" if algorithm is None else shown(algorithm)
            return Rejected(
                reason=RejectReason.ALGORITHM_INVALID,
                detail=f"X-Webhook-Hmac-Algorithm must be {HMAC_ALGORITHM}, got {quoted}",
            )
        expected = sign(body, hmac_key).encode("ascii")
        if not hmac.compare_digest(expected, provided.encode("utf-8", "replace")):
            return Rejected(
                reason=RejectReason.SIGNATURE_INVALID,
                detail="X-Webhook-Hmac does not match the body",
            )
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict):
        return None
    stamp = _event_time_ms(envelope)
    if isinstance(stamp, Rejected):
        return stamp
    if stamp is None:
        if (
            hmac_key is None
            or envelope.get("event") != "message"
            or not isinstance(envelope.get("payload"), dict)
        ):
            return None  # unsigned mode, or nothing that could be stored
        return Rejected(
            reason=RejectReason.TIMESTAMP_MISSING,
            detail="the signed body carries no `timestamp` (nor `payload.timestamp`)",
        )
    age_s = now_s - stamp / 1000.0
    if age_s > window_s:
        return Rejected(
            reason=RejectReason.TIMESTAMP_STALE,
            detail=f"the event is {age_s:.0f} s old (window {window_s:g} s)",
        )
    if -age_s > future_skew_s:
        return Rejected(
            reason=RejectReason.TIMESTAMP_FUTURE,
            detail=f"the event is {-age_s:.0f} s in the future",
        )
    return None


_MAX_STAMP_MS = 10**16


def _event_time_ms(envelope: Mapping[str, Any]) -> int | Rejected | None:
    """The event's time in ms from the signed body: ``timestamp`` (ms), else ``payload.timestamp`` (s)."""
    payload = envelope.get("payload")
    for where, value, scale in (
        ("timestamp", envelope.get("timestamp"), 1),
        (
            "payload.timestamp",
            payload.get("timestamp") if isinstance(payload, dict) else None,
            1000,
        ),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _MAX_STAMP_MS:
            return Rejected(
                reason=RejectReason.TIMESTAMP_INVALID,
                detail=f"`{where}` must be a positive Unix time in {'ms' if scale == 1 else 's'}",
            )
        return value * scale
    return None
