"""Logging: JSON lines with UTC timestamps, structured tracebacks, and redaction of secrets."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from concierge.observability import configure_logging
from concierge.observability.logs import Redactor


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(
        level="info", fmt="json", secrets=["my-very-own-configured-secret"], stream=stream
    )
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_are_json_lines_with_utc_iso_timestamps(json_log: io.StringIO) -> None:
    structlog.get_logger("t").info("thing.happened", correlation_id="abc123", count=3)
    (event,) = lines(json_log)
    assert event["event"] == "thing.happened"
    assert event["level"] == "info"
    assert event["correlation_id"] == "abc123"
    assert str(event["timestamp"]).endswith("Z")


def test_bound_context_travels_with_the_event(json_log: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(correlation_id="cid-1"):
        structlog.get_logger("t").info("x.done")
    assert lines(json_log)[0]["correlation_id"] == "cid-1"


def test_tracebacks_are_structured_and_exception_group_aware(json_log: io.StringIO) -> None:
    try:
        raise ExceptionGroup("two failures", [ValueError("a"), KeyError("b")])
    except ExceptionGroup as exc:
        structlog.get_logger("t").error("x.failed", exc_info=exc)
    (event,) = lines(json_log)
    (top,) = event["exception"]
    assert top["is_group"] is True
    assert [e[0]["exc_type"] for e in top["exceptions"]] == ["ValueError", "KeyError"]
    assert "locals" not in json.dumps(top)


def test_user_text_with_newlines_stays_one_line(json_log: io.StringIO) -> None:
    structlog.get_logger("t").warning("x.odd", detail='line one\n{"event": "forged"}')
    assert len(json_log.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "calling https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getUpdates",
            "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        ),
        ("key sk-ant-api03-abcdefghijklmnop failed", "sk-ant-api03-abcdefghijklmnop"),
        ("openrouter sk-or-v1-0123456789abcdef", "sk-or-v1-0123456789abcdef"),
        ("gemini AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        ),
        ("dsn postgres://app:hunter2@db:5432/concierge", "hunter2"),
        ("redis://:s3cr3tpass@cache:6379/0", "s3cr3tpass"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
        ("call +221 77 123 45 67 now", "77 123 45 67"),
        ("call +33612345678", "+33612345678"),
        ("appelez le 06 12 34 56 78", "06 12 34 56 78"),
        ("from 221771234567@c.us", "221771234567"),
        ("message false_221771234567@c.us_3EB0C767D26A1D3A2B8F", "221771234567"),
        ("message true_221771234567@s.whatsapp.net_ABCDEF", "221771234567"),
        ("device 221771234567:12@s.whatsapp.net", "221771234567"),
        ("user waha:221771234567@c.us", "221771234567"),
        ("hidden false_123456789012345@lid_AAAA", "123456789012345"),
        ("lid 123456789012345@lid", "123456789012345"),
        ("uses my-very-own-configured-secret here", "my-very-own-configured-secret"),
        ("GET /v1beta/models/x:generateContent?key=plainkeyvalue", "plainkeyvalue"),
    ],
)
def test_secrets_and_phone_numbers_are_masked_anywhere(
    json_log: io.StringIO, text: str, secret: str
) -> None:
    log = structlog.get_logger("t")
    log.info("x.said", detail=text, nested={"inner": [text]})
    raw = json_log.getvalue()
    assert secret not in raw
    event = lines(json_log)[0]
    assert event["detail"] != text


def test_fields_named_like_secrets_are_replaced_whole(json_log: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "x.cfg", api_key="short", password="p", webhook_secret="s", headers={"Authorization": "x y"}
    )
    event = lines(json_log)[0]
    assert event["api_key"] == event["password"] == event["webhook_secret"] == "[redacted]"
    assert event["headers"] == {"Authorization": "[redacted]"}


def test_ordinary_values_are_left_alone() -> None:
    redactor = Redactor()
    for text in (
        "2026-11-27T13:13:07.123456Z",
        "telegram:111111111",
        "inbox 4242 processed in 12.5 ms",
        "127.0.0.1:8000",
        "messe à 10h30 le dimanche",
    ):
        assert redactor.redact_text(text) == text


def test_masking_holds_for_repeated_short_values_and_long_ones() -> None:
    redactor = Redactor(["my-very-own-configured-secret"])
    short = "call +33612345678"
    long = "the parishioner wrote from 221771234567@c.us: " + "x" * 80
    for _ in range(3):  # the second time comes from the memo: it must mask just the same
        assert redactor.redact_text(short) == "call [phone]"
        assert "221771234567" not in redactor.redact_text(long)
        assert redactor.redact_text("uses my-very-own-configured-secret") == "uses [redacted]"
    assert Redactor().redact_text("uses my-very-own-configured-secret") == (
        "uses my-very-own-configured-secret"
    )


def test_commands_cache_their_loggers_and_tests_do_not() -> None:
    try:
        configure_logging(level="info", fmt="json", stream=io.StringIO())
        assert structlog.get_config()["cache_logger_on_first_use"] is False
        configure_logging(level="info", fmt="json", stream=io.StringIO(), cache_loggers=True)
        assert structlog.get_config()["cache_logger_on_first_use"] is True
    finally:
        structlog.reset_defaults()
