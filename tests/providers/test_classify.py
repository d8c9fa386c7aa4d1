"""The shared classification pieces: statuses, retry hints, GLM codes, spend-limit messages."""

from __future__ import annotations

import pytest

from concierge.protocol import Outcome
from concierge.providers.classify import (
    error_detail,
    glm_outcome,
    is_spend_limit_message,
    outcome_for_status,
    parse_duration,
    retry_after_from_headers,
    seconds_until_pacific_midnight,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (400, Outcome.REQUEST_ERROR),
        (401, Outcome.DEAD_KEY),
        (402, Outcome.DEAD_KEY),
        (403, Outcome.DEAD_KEY),
        (404, Outcome.REQUEST_ERROR),
        (408, Outcome.TRANSIENT),
        (413, Outcome.REQUEST_ERROR),
        (422, Outcome.REQUEST_ERROR),
        (429, Outcome.THROTTLED),
        (500, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
        (529, Outcome.TRANSIENT),
    ],
)
def test_status_alone_maps_to_an_outcome(status: int, outcome: Outcome) -> None:
    assert outcome_for_status(status) is outcome


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"}, 30.0),
        ({"anthropic-ratelimit-requests-reset": "2027-01-15T08:00:20Z"}, 20.0),
        (
            {
                "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:20Z",
                "anthropic-ratelimit-requests-remaining": "4",
                "anthropic-ratelimit-output-tokens-reset": "2027-01-15T08:01:00Z",
                "anthropic-ratelimit-output-tokens-remaining": "0",
            },
            60.0,
        ),
        ({"X-RateLimit-Reset": str(int((NOW + 45) * 1000))}, 45.0),
        ({"x-ratelimit-reset": str(int(NOW + 5))}, 5.0),
        ({"x-ratelimit-reset": "12"}, 12.0),
        ({"retry-after": "2027-01-15T07:00:00Z"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
    ids=[
        "seconds",
        "fractional",
        "ms-first",
        "http-date",
        "anthropic-reset",
        "exhausted-limit-wins",
        "epoch-ms",
        "epoch-s",
        "delta",
        "past-is-zero",
        "garbage",
        "none",
    ],
)
def test_retry_hint_is_read_from_whichever_header_the_server_used(
    headers: dict[str, str], hint: float | None
) -> None:
    got = retry_after_from_headers(headers, now=NOW)
    if hint is None:
        assert got is None
    else:
        assert got == pytest.approx(hint)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7s", 7.0),
        ("36.4s", 36.4),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("3", 3.0),
        (5, 5.0),
        ("-1s", None),
        ("abc", None),
        (None, None),
    ],
)
def test_durations_parse_like_protobuf_and_plain_numbers(
    text: object, seconds: float | None
) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("1113", Outcome.DEAD_KEY),
        (1002, Outcome.DEAD_KEY),
        ("1309", Outcome.DEAD_KEY),
        ("1302", Outcome.THROTTLED),
        ("1304", Outcome.THROTTLED),
        ("1308", Outcome.THROTTLED),
        ("1313", Outcome.THROTTLED),
        ("1305", Outcome.TRANSIENT),
        ("1312", Outcome.TRANSIENT),
        ("1214", Outcome.REQUEST_ERROR),
        ("1261", Outcome.REQUEST_ERROR),
        ("1301", Outcome.REQUEST_ERROR),
        ("1999", None),
        (429, None),
        ("rate_limit", None),
        (True, None),
        (None, None),
    ],
)
def test_glm_business_codes(code: object, outcome: Outcome | None) -> None:
    assert glm_outcome(code) is outcome


@pytest.mark.parametrize(
    ("message", "spent"),
    [
        ("Your credit balance is too low to access the Anthropic API.", True),
        ("You have reached your specified workspace API usage limits.", True),
        ("messages: roles must alternate", False),
        ("prompt is too long: 210000 tokens > 200000 maximum", False),
    ],
)
def test_spend_limit_messages_are_recognised(message: str, spent: bool) -> None:
    assert is_spend_limit_message(message) is spent


def test_pacific_midnight_is_never_zero_and_at_most_a_day() -> None:
    assert 1.0 <= seconds_until_pacific_midnight(now=NOW) <= 25 * 3600
    assert seconds_until_pacific_midnight(now=NOW) == 24 * 3600  # 08:00Z is 00:00 PST
    assert seconds_until_pacific_midnight(now=NOW + 8 * 3600) == 16 * 3600


def test_error_detail_is_short_and_single_line() -> None:
    detail = error_detail(400, "invalid_request_error", "line one\nline two " + "x" * 500, limit=60)
    assert detail.startswith("400 invalid_request_error: line one line two")
    assert "\n" not in detail
    assert len(detail) < 100
