"""WAHA webhook authenticity: the HMAC over the raw body, and freshness from the signed body."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels.waha_signature import sign, verify_delivery
from concierge.channels.waha_wire import Rejected, RejectReason

DOC_KEY = "my-secret-key"
DOC_BODY = b'{"event":"message","session":"default","engine":"WEBJS"}'
NOW_S = 1_800_000_000.0


def signed_headers(
    body: bytes, *, key: str = DOC_KEY, stamp_ms: int | None = None
) -> dict[str, str]:
    return {
        "X-Webhook-Hmac": hmac.new(key.encode(), body, hashlib.sha512).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha512",
        "X-Webhook-Timestamp": str(int(NOW_S * 1000) if stamp_ms is None else stamp_ms),
        "X-Webhook-Request-Id": "req-1",
    }


def verify(body: bytes, headers: dict[str, str], *, key: str | None = DOC_KEY) -> Rejected | None:
    return verify_delivery(body=body, headers=headers, hmac_key=key, now_s=NOW_S, window_s=600)


# -- signature ---------------------------------------------------------------------------------
def test_documented_hmac_vector_is_reproduced() -> None:
    digest = sign(DOC_BODY, DOC_KEY)
    assert digest.startswith("208f8a55")
    assert digest.endswith("53fa89")


def test_documented_vector_is_accepted() -> None:
    assert verify(DOC_BODY, signed_headers(DOC_BODY)) is None


def test_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in signed_headers(DOC_BODY).items()}
    assert verify(DOC_BODY, headers) is None


@pytest.mark.parametrize("position", [0, 10, len(DOC_BODY) - 1])
def test_body_changed_by_one_byte_is_rejected(position: int) -> None:
    headers = signed_headers(DOC_BODY)
    tampered = bytearray(DOC_BODY)
    tampered[position] ^= 0x01
    result = verify(bytes(tampered), headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_body_reserialised_with_other_spacing_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    spaced = json.dumps(json.loads(DOC_BODY)).encode()  # ", " and ": " separators
    assert spaced != DOC_BODY
    result = verify(spaced, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


@pytest.mark.parametrize("algorithm", ["sha256", "SHA512", "sha-512", ""])
def test_algorithm_other_than_sha512_is_rejected(algorithm: str) -> None:
    headers = signed_headers(DOC_BODY) | {"X-Webhook-Hmac-Algorithm": algorithm}
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.ALGORITHM_INVALID


def test_missing_algorithm_header_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    del headers["X-Webhook-Hmac-Algorithm"]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.ALGORITHM_INVALID


def test_sha256_signature_with_sha256_header_is_rejected() -> None:
    headers = signed_headers(DOC_BODY) | {
        "X-Webhook-Hmac": hmac.new(DOC_KEY.encode(), DOC_BODY, hashlib.sha256).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha256",
    }
    assert verify(DOC_BODY, headers) is not None


def test_uppercased_hmac_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    headers["X-Webhook-Hmac"] = headers["X-Webhook-Hmac"].upper()
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


@pytest.mark.parametrize("keep", [1, 64, 127])
def test_truncated_hmac_is_rejected(keep: int) -> None:
    headers = signed_headers(DOC_BODY)
    headers["X-Webhook-Hmac"] = headers["X-Webhook-Hmac"][:keep]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_missing_hmac_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    del headers["X-Webhook-Hmac"]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_MISSING


def test_signature_with_another_key_is_rejected() -> None:
    result = verify(DOC_BODY, signed_headers(DOC_BODY, key="another-key"))
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_non_ascii_hmac_header_is_rejected_without_error() -> None:
    headers = signed_headers(DOC_BODY) | {"X-Webhook-Hmac": "é" * 128}
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


# -- timestamp: the event's own, inside the signed body ------------------------------------------
def stamped(stamp_ms: Any, *, payload_s: Any = None) -> bytes:
    """A signed-shaped message body whose envelope carries ``stamp_ms`` (omitted when None)."""
    event: dict[str, Any] = {"event": "message", "session": "default", "payload": {}}
    if stamp_ms is not None:
        event["timestamp"] = stamp_ms
    if payload_s is not None:
        event["payload"]["timestamp"] = payload_s
    return json.dumps(event).encode()


def verify_stamped(body: bytes, *, header_ms: int | None = None, key: str | None = DOC_KEY) -> Any:
    headers = signed_headers(body, stamp_ms=header_ms) if key else {}
    return verify(body, headers, key=key)


def test_an_event_beyond_the_window_is_rejected() -> None:
    result = verify_stamped(stamped(int((NOW_S - 601) * 1000)))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_a_fresh_header_does_not_revive_an_old_signed_event() -> None:
    """The header is not signed: a captured delivery re-sent with a new one stays stale."""
    old = stamped(int((NOW_S - 3600) * 1000))
    result = verify_stamped(old, header_ms=int(NOW_S * 1000))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_an_event_inside_the_window_is_accepted_whatever_the_header() -> None:
    assert verify_stamped(stamped(int((NOW_S - 599) * 1000)), header_ms=0) is None


def test_an_event_far_in_the_future_is_rejected() -> None:
    result = verify_stamped(stamped(int((NOW_S + 120) * 1000)))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_FUTURE


def test_small_clock_skew_ahead_is_accepted() -> None:
    assert verify_stamped(stamped(int((NOW_S + 30) * 1000))) is None


def test_older_builds_payload_timestamp_in_seconds_is_used() -> None:
    assert verify_stamped(stamped(None, payload_s=int(NOW_S) - 10)) is None
    result = verify_stamped(stamped(None, payload_s=int(NOW_S) - 3600))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


@pytest.mark.parametrize("stamp", ["1800000000000", -5, 0, True, 1.8e12, 10**17, [1]])
def test_unreadable_event_timestamp_is_rejected(stamp: Any) -> None:
    result = verify_stamped(stamped(stamp))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_INVALID


def test_signed_message_without_any_timestamp_is_rejected() -> None:
    result = verify_stamped(stamped(None), header_ms=int(NOW_S * 1000))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_MISSING


def test_unsigned_mode_accepts_a_delivery_without_headers() -> None:
    assert verify(DOC_BODY, {}, key=None) is None
    assert verify_stamped(stamped(None), key=None) is None


def test_unsigned_mode_still_rejects_a_stale_event() -> None:
    result = verify_stamped(stamped(int((NOW_S - 3600) * 1000)), key=None)
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_rejections_map_to_401_except_malformed_bodies() -> None:
    assert {r: r.http_status for r in RejectReason} == {
        r: (400 if r is RejectReason.MALFORMED else 401) for r in RejectReason
    }


# -- fuzzing ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["X-Webhook-Hmac", "X-Webhook-Hmac-Algorithm", "X-Webhook-Timestamp", "Other"]
        ),
        st.text(max_size=140),
    ),
    st.binary(max_size=64),
    st.sampled_from([DOC_KEY, None]),
)
def test_fuzz_headers_give_none_or_a_typed_rejection(
    headers: dict[str, str], body: bytes, key: str | None
) -> None:
    result = verify(body, headers, key=key)
    assert result is None or isinstance(result, Rejected)
    if key is not None:
        assert result is not None  # a random header set never carries the right signature
