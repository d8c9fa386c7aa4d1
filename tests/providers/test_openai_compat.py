"""The openai adapter over httpx against the loopback OpenAI-compatible / OpenRouter fake."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from concierge.protocol import Outcome
from concierge.providers import ProviderError
from concierge.providers.openai_compat import (
    KeyCredit,
    OpenAICompatAdapter,
    OpenRouterAdapter,
    classify_openai_error,
)
from tests.fakes.llm_common import Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.providers.conftest import KEY, OTHER_KEY, MakeCall, MakeSettings, failure_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def adapter(
    openai_fake: FakeOpenAI, make_settings: MakeSettings
) -> AsyncIterator[OpenRouterAdapter]:
    adapter = OpenRouterAdapter(
        make_settings(
            "openai",
            openai_fake.url + "/api/v1",
            name="openrouter",
            model="openai/gpt-test",
            app_url="https://paroisse.example",
            app_title="Accueil paroisse",
        )
    )
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_reply_text_and_token_counts_are_parsed(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI, make_call: MakeCall
) -> None:
    openai_fake.push(Scripted(text="La messe est à 10 h 30.", tokens_in=50, tokens_out=10))
    reply = await adapter.complete(make_call(), KEY)
    assert reply.text == "La messe est à 10 h 30."
    assert (reply.tokens_in, reply.tokens_out) == (50, 10)
    assert reply.model == "openai/gpt-test"
    assert (adapter.name, adapter.kind, adapter.model) == (
        "openrouter",
        "openai",
        "openai/gpt-test",
    )


async def test_request_carries_system_turns_max_tokens_model_key_and_attribution(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI, make_call: MakeCall
) -> None:
    await adapter.complete(make_call(max_tokens=77), KEY)
    await adapter.complete(make_call(), OTHER_KEY)
    first, second = openai_fake.requests
    assert first.path == "/api/v1/chat/completions"
    assert first.json["model"] == "openai/gpt-test"
    assert first.json["max_tokens"] == 77
    assert [m["role"] for m in first.json["messages"]] == ["system", "user", "assistant", "user"]
    assert first.json["messages"][0]["content"] == "Tu es l'accueil de la paroisse."
    assert first.headers["authorization"] == f"Bearer {KEY.secret}"
    assert first.headers["http-referer"] == "https://paroisse.example"
    assert first.headers["x-title"] == "Accueil paroisse"
    assert second.key == OTHER_KEY.secret


async def test_a_glm_endpoint_gets_no_attribution_headers(
    openai_fake: FakeOpenAI, make_settings: MakeSettings, make_call: MakeCall
) -> None:
    adapter = OpenAICompatAdapter(
        make_settings("openai", openai_fake.url + "/api/paas/v4/", name="glm")
    )
    try:
        await adapter.complete(make_call(system=""), KEY)
    finally:
        await adapter.aclose()
    sent = openai_fake.requests[0]
    assert sent.path == "/api/paas/v4/chat/completions"
    assert "http-referer" not in sent.headers
    assert "x-title" not in sent.headers
    assert [m["role"] for m in sent.json["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("scripted", "outcome"),
    [
        (FakeOpenAI.error(400, "context length exceeded"), Outcome.REQUEST_ERROR),
        (FakeOpenAI.moderation(), Outcome.REQUEST_ERROR),
        (FakeOpenAI.no_credit(), Outcome.DEAD_KEY),
        (FakeOpenAI.invalid_key(), Outcome.DEAD_KEY),
        (FakeOpenAI.error(403, "Key disabled"), Outcome.DEAD_KEY),
        (
            FakeOpenAI.error(429, "You exceeded your current quota", code="insufficient_quota"),
            Outcome.DEAD_KEY,
        ),
        (FakeOpenAI.upstream_down(), Outcome.TRANSIENT),
        (FakeOpenAI.unavailable(), Outcome.TRANSIENT),
        (FakeOpenAI.error(408, "Request timed out"), Outcome.TRANSIENT),
        (Scripted(status=500, raw=b"Internal Server Error"), Outcome.TRANSIENT),
        (Scripted(status=200, raw=b"<html>not json</html>"), Outcome.TRANSIENT),
        (Scripted(text=""), Outcome.TRANSIENT),
        (
            Scripted(
                text="",
                extra={
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "content_filter",
                            "message": {"role": "assistant", "content": None},
                        }
                    ]
                },
            ),
            Outcome.REQUEST_ERROR,
        ),
    ],
    ids=[
        "400",
        "403-moderation",
        "402",
        "401",
        "403",
        "429-insufficient-quota",
        "502",
        "503",
        "408",
        "500-text",
        "200-not-json",
        "empty-reply",
        "content-filter",
    ],
)
async def test_error_answers_are_classified(
    adapter: OpenRouterAdapter,
    openai_fake: FakeOpenAI,
    make_call: MakeCall,
    scripted: Scripted,
    outcome: Outcome,
) -> None:
    openai_fake.push(scripted)
    error = await failure_of(adapter, make_call)
    assert error.outcome is outcome
    assert error.retry_after_s is None
    assert len(openai_fake.requests) == 1


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("1113", Outcome.DEAD_KEY),
        ("1001", Outcome.DEAD_KEY),
        ("1302", Outcome.THROTTLED),
        ("1303", Outcome.THROTTLED),
        ("1305", Outcome.TRANSIENT),
        ("1312", Outcome.TRANSIENT),
        ("1211", Outcome.REQUEST_ERROR),
        ("1261", Outcome.REQUEST_ERROR),
    ],
)
async def test_glm_business_codes_in_a_429_decide_the_outcome(
    adapter: OpenRouterAdapter,
    openai_fake: FakeOpenAI,
    make_call: MakeCall,
    code: str,
    outcome: Outcome,
) -> None:
    openai_fake.push(FakeOpenAI.glm_error(code, "business error"))
    error = await failure_of(adapter, make_call)
    assert error.outcome is outcome
    assert code in error.detail


async def test_rate_limit_is_throttled_until_retry_after(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI, make_call: MakeCall
) -> None:
    openai_fake.push(FakeOpenAI.rate_limited(retry_after_s=12))
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s == 12.0


async def test_rate_limit_reset_in_epoch_milliseconds_gives_the_hint(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI, make_call: MakeCall
) -> None:
    openai_fake.push(FakeOpenAI.rate_limited(reset_epoch_ms=int((time.time() + 600) * 1000)))
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s is not None
    assert 500 < error.retry_after_s <= 600


def test_rate_limit_reset_header_is_read_against_the_given_clock() -> None:
    error = classify_openai_error(
        429,
        {"error": {"code": 429, "message": "Rate limit exceeded"}},
        {"X-RateLimit-Reset": "1700000030000"},
        now=1_700_000_000.0,
    )
    assert error.retry_after_s == 30.0


@pytest.mark.parametrize(
    ("scripted", "outcome"),
    [
        (FakeOpenAI.error_in_200(429, "Rate limit exceeded"), Outcome.THROTTLED),
        (FakeOpenAI.error_in_200(402, "Insufficient credits"), Outcome.DEAD_KEY),
        (FakeOpenAI.error_in_200(502, "Provider returned error"), Outcome.TRANSIENT),
        (FakeOpenAI.error_in_200("1113", "Insufficient balance"), Outcome.DEAD_KEY),
        (FakeOpenAI.finish_error(429, "Rate limit exceeded upstream"), Outcome.THROTTLED),
        (FakeOpenAI.finish_error("server_error", "upstream stopped"), Outcome.TRANSIENT),
    ],
    ids=[
        "200-429",
        "200-402",
        "200-502",
        "200-glm-1113",
        "finish-error-429",
        "finish-error-unknown",
    ],
)
async def test_errors_inside_a_200_are_classified_by_their_code(
    adapter: OpenRouterAdapter,
    openai_fake: FakeOpenAI,
    make_call: MakeCall,
    scripted: Scripted,
    outcome: Outcome,
) -> None:
    openai_fake.push(scripted)
    error = await failure_of(adapter, make_call)
    assert error.outcome is outcome


async def test_key_info_reports_an_unlimited_key(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI
) -> None:
    credit = await adapter.fetch_key_info(KEY)
    assert credit == KeyCredit(
        limit=None, remaining=None, usage=0.0, label=credit.label, is_free_tier=False
    )
    sent = openai_fake.requests_to("key")[0]
    assert sent.path == "/api/v1/key"
    assert sent.key == KEY.secret


async def test_key_info_reports_limit_remaining_and_usage(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI
) -> None:
    openai_fake.set_credit(OTHER_KEY.secret, limit=10.0, remaining=0.25, usage=9.75, label="parish")
    credit = await adapter.fetch_key_info(OTHER_KEY)
    assert (credit.limit, credit.remaining, credit.usage, credit.label) == (
        10.0,
        0.25,
        9.75,
        "parish",
    )


async def test_key_info_for_a_dead_key_raises_dead_key(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI
) -> None:
    openai_fake.push(FakeOpenAI.invalid_key(), endpoint="key")
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_key_info(KEY)
    assert caught.value.outcome is Outcome.DEAD_KEY


async def test_key_info_that_hangs_is_transient(
    adapter: OpenRouterAdapter, openai_fake: FakeOpenAI
) -> None:
    openai_fake.push(Scripted(hang=True), endpoint="key")
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_key_info(KEY, timeout_s=0.3)
    assert caught.value.outcome is Outcome.TRANSIENT
