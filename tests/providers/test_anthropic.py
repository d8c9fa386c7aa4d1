"""The anthropic adapter through the real SDK against the loopback Messages API fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from concierge.protocol import Outcome, Role, Turn
from concierge.providers.anthropic import AnthropicAdapter
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.llm_common import Scripted
from tests.providers.conftest import KEY, OTHER_KEY, MakeCall, MakeSettings, failure_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def adapter(
    anthropic_fake: FakeAnthropic, make_settings: MakeSettings
) -> AsyncIterator[AnthropicAdapter]:
    adapter = AnthropicAdapter(make_settings("anthropic", anthropic_fake.url, model="claude-test"))
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_reply_text_and_token_counts_are_parsed(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    anthropic_fake.push(Scripted(text="La messe est à 10 h 30.", tokens_in=42, tokens_out=9))
    reply = await adapter.complete(make_call(), KEY)
    assert reply.text == "La messe est à 10 h 30."
    assert (reply.tokens_in, reply.tokens_out) == (42, 9)
    assert reply.model == "claude-test"
    assert (adapter.name, adapter.kind, adapter.model) == ("anthropic", "anthropic", "claude-test")


async def test_request_carries_system_turns_max_tokens_model_and_key(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    await adapter.complete(make_call(max_tokens=123), KEY)
    await adapter.complete(make_call(), OTHER_KEY)
    first, second = anthropic_fake.requests
    assert first.path == "/v1/messages"
    assert first.json["model"] == "claude-test"
    assert first.json["max_tokens"] == 123
    assert first.json["system"] == "Tu es l'accueil de la paroisse."
    assert [m["role"] for m in first.json["messages"]] == ["user", "assistant", "user"]
    assert first.json["messages"][-1]["content"] == "À quelle heure est la messe dimanche ?"
    assert first.headers["x-api-key"] == KEY.secret
    assert first.headers["authorization"] == f"Bearer {KEY.secret}"
    assert first.headers["anthropic-version"]
    assert second.key == OTHER_KEY.secret


async def test_context_starting_with_the_assistant_is_trimmed_and_repeats_merged(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    turns = (
        Turn(role=Role.ASSISTANT, text="(earlier answer)"),
        Turn(role=Role.USER, text="Bonjour"),
        Turn(role=Role.USER, text="Vous êtes là ?"),
    )
    await adapter.complete(make_call(turns=turns, system=""), KEY)
    sent = anthropic_fake.requests[0].json
    assert sent["messages"] == [{"role": "user", "content": "Bonjour\n\nVous êtes là ?"}]
    assert "system" not in sent


async def test_nothing_to_send_is_a_request_error_without_a_call(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    error = await failure_of(adapter, make_call, turns=(), query="")
    assert error.outcome is Outcome.REQUEST_ERROR
    assert anthropic_fake.requests == []


@pytest.mark.parametrize(
    ("scripted", "outcome"),
    [
        (FakeAnthropic.invalid_request(), Outcome.REQUEST_ERROR),
        (
            FakeAnthropic.error(413, "request_too_large", "Request exceeds the maximum size"),
            Outcome.REQUEST_ERROR,
        ),
        (FakeAnthropic.error(422, "invalid_request_error", "unprocessable"), Outcome.REQUEST_ERROR),
        (FakeAnthropic.refusal(), Outcome.REQUEST_ERROR),
        (FakeAnthropic.invalid_key(), Outcome.DEAD_KEY),
        (FakeAnthropic.error(403, "permission_error", "not allowed"), Outcome.DEAD_KEY),
        (FakeAnthropic.error(402, "billing_error", "payment failed"), Outcome.DEAD_KEY),
        (FakeAnthropic.low_credit(), Outcome.DEAD_KEY),
        (
            FakeAnthropic.invalid_request("You have reached your specified API usage limits."),
            Outcome.DEAD_KEY,
        ),
        (FakeAnthropic.overloaded(), Outcome.TRANSIENT),
        (FakeAnthropic.error(500, "api_error", "Internal server error"), Outcome.TRANSIENT),
        (FakeAnthropic.error(504, "timeout_error", "timeout"), Outcome.TRANSIENT),
        (Scripted(status=502, raw=b"<html>Bad gateway</html>"), Outcome.TRANSIENT),
        (Scripted(text=""), Outcome.TRANSIENT),
    ],
    ids=[
        "400",
        "413",
        "422",
        "refusal",
        "401",
        "403",
        "402-billing",
        "400-credit-balance",
        "400-usage-limit",
        "529",
        "500",
        "504",
        "502-html",
        "empty-reply",
    ],
)
async def test_error_answers_are_classified(
    adapter: AnthropicAdapter,
    anthropic_fake: FakeAnthropic,
    make_call: MakeCall,
    scripted: Scripted,
    outcome: Outcome,
) -> None:
    anthropic_fake.push(scripted)
    error = await failure_of(adapter, make_call)
    assert error.outcome is outcome
    assert error.retry_after_s is None
    assert len(anthropic_fake.requests) == 1, "the SDK must not retry on its own"


@pytest.mark.parametrize(
    ("scripted", "hint"),
    [
        (FakeAnthropic.rate_limited(retry_after_s=7), 7.0),
        (FakeAnthropic.rate_limited(retry_after_ms=1500, retry_after_s=2), 1.5),
        (FakeAnthropic.rate_limited(), None),
    ],
    ids=["retry-after", "retry-after-ms", "no-hint"],
)
async def test_rate_limit_is_throttled_with_the_servers_hint(
    adapter: AnthropicAdapter,
    anthropic_fake: FakeAnthropic,
    make_call: MakeCall,
    scripted: Scripted,
    hint: float | None,
) -> None:
    anthropic_fake.push(scripted)
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s == hint
    assert len(anthropic_fake.requests) == 1


async def test_rate_limit_reset_headers_give_the_hint(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    reset = (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    soon = (datetime.now(UTC) + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    anthropic_fake.push(
        FakeAnthropic.rate_limited(
            reset_headers={
                "anthropic-ratelimit-requests-remaining": "3",
                "anthropic-ratelimit-requests-reset": soon,
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": reset,
            }
        )
    )
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s is not None
    assert 500 < error.retry_after_s <= 600  # the exhausted limit's reset, not the other one


async def test_glm_business_code_in_a_429_disables_the_key(
    adapter: AnthropicAdapter, anthropic_fake: FakeAnthropic, make_call: MakeCall
) -> None:
    anthropic_fake.push(
        Scripted(
            status=429,
            body={
                "error": {
                    "code": "1113",
                    "message": "Insufficient balance or no resource package. Please recharge.",
                }
            },
        )
    )
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.DEAD_KEY
    assert "1113" in error.detail
