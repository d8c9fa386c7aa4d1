"""The gemini adapter through the real google-genai SDK against the loopback Gemini fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from concierge.protocol import Outcome
from concierge.providers.gemini import GeminiAdapter, classify_gemini_error
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.llm_common import Scripted
from tests.providers.conftest import KEY, OTHER_KEY, MakeCall, MakeSettings, failure_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def adapter(
    gemini_fake: FakeGemini, make_settings: MakeSettings
) -> AsyncIterator[GeminiAdapter]:
    adapter = GeminiAdapter(make_settings("gemini", gemini_fake.url, model="gemini-test"))
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_reply_text_and_token_counts_are_parsed(
    adapter: GeminiAdapter, gemini_fake: FakeGemini, make_call: MakeCall
) -> None:
    gemini_fake.push(Scripted(text="La messe est à 10 h 30.", tokens_in=40, tokens_out=8))
    reply = await adapter.complete(make_call(), KEY)
    assert reply.text == "La messe est à 10 h 30."
    assert (reply.tokens_in, reply.tokens_out) == (40, 8)
    assert reply.model == "gemini-test"
    assert (adapter.name, adapter.kind, adapter.model) == ("gemini", "gemini", "gemini-test")


async def test_request_carries_system_turns_max_tokens_model_and_key(
    adapter: GeminiAdapter, gemini_fake: FakeGemini, make_call: MakeCall
) -> None:
    await adapter.complete(make_call(max_tokens=99), KEY)
    await adapter.complete(make_call(), OTHER_KEY)
    first, second = gemini_fake.requests
    assert first.path == "/v1beta/models/gemini-test:generateContent"
    assert first.headers["x-goog-api-key"] == KEY.secret
    assert first.json["systemInstruction"]["parts"] == [{"text": "Tu es l'accueil de la paroisse."}]
    assert [c["role"] for c in first.json["contents"]] == ["user", "model", "user"]
    assert first.json["contents"][-1]["parts"] == [
        {"text": "À quelle heure est la messe dimanche ?"}
    ]
    assert first.json["generationConfig"]["maxOutputTokens"] == 99
    assert second.key == OTHER_KEY.secret


@pytest.mark.parametrize(
    ("scripted", "outcome"),
    [
        (FakeGemini.invalid_argument(), Outcome.REQUEST_ERROR),
        (FakeGemini.error(404, "NOT_FOUND", "models/nope is not found"), Outcome.REQUEST_ERROR),
        (FakeGemini.blocked_prompt(), Outcome.REQUEST_ERROR),
        (FakeGemini.blocked_prompt("PROHIBITED_CONTENT"), Outcome.REQUEST_ERROR),
        (FakeGemini.finished("SAFETY"), Outcome.REQUEST_ERROR),
        (FakeGemini.finished("SAFETY", text="partial"), Outcome.REQUEST_ERROR),
        (FakeGemini.invalid_key(), Outcome.DEAD_KEY),
        (FakeGemini.permission_denied(), Outcome.DEAD_KEY),
        (FakeGemini.failed_precondition(), Outcome.DEAD_KEY),
        (FakeGemini.internal(), Outcome.TRANSIENT),
        (FakeGemini.unavailable(), Outcome.TRANSIENT),
        (FakeGemini.deadline_exceeded(), Outcome.TRANSIENT),
        (FakeGemini.finished("STOP"), Outcome.TRANSIENT),
    ],
    ids=[
        "400-invalid-argument",
        "404",
        "blocked-safety",
        "blocked-prohibited",
        "finish-safety",
        "finish-safety-partial",
        "400-api-key-invalid",
        "403",
        "400-failed-precondition",
        "500",
        "503",
        "504",
        "empty-candidate",
    ],
)
async def test_error_answers_are_classified(
    adapter: GeminiAdapter,
    gemini_fake: FakeGemini,
    make_call: MakeCall,
    scripted: Scripted,
    outcome: Outcome,
) -> None:
    gemini_fake.push(scripted)
    error = await failure_of(adapter, make_call)
    assert error.outcome is outcome
    assert error.retry_after_s is None
    assert len(gemini_fake.requests) == 1, "the SDK must not retry on its own"


async def test_per_minute_quota_is_throttled_until_the_retry_delay(
    adapter: GeminiAdapter, gemini_fake: FakeGemini, make_call: MakeCall
) -> None:
    gemini_fake.push(FakeGemini.resource_exhausted(retry_delay_s=7))
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s == 7.0
    assert len(gemini_fake.requests) == 1


async def test_retry_delay_falls_back_to_the_message(
    adapter: GeminiAdapter, gemini_fake: FakeGemini, make_call: MakeCall
) -> None:
    gemini_fake.push(
        FakeGemini.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded. Please retry in 36.4s.")
    )
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s == 36.4


async def test_daily_quota_is_throttled_until_midnight_pacific(
    adapter: GeminiAdapter, gemini_fake: FakeGemini, make_call: MakeCall
) -> None:
    gemini_fake.push(FakeGemini.per_day_quota(retry_delay_s=36))
    error = await failure_of(adapter, make_call)
    assert error.outcome is Outcome.THROTTLED
    assert error.retry_after_s is not None
    assert 36 <= error.retry_after_s <= 25 * 3600


def test_daily_quota_hint_counts_to_the_next_pacific_midnight() -> None:
    pacific = ZoneInfo("America/Los_Angeles")
    now = datetime(2026, 11, 27, 22, 0, tzinfo=pacific).timestamp()
    body = {
        "error": {
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"},
            ]
        }
    }
    error = classify_gemini_error(429, "RESOURCE_EXHAUSTED", "quota", body, now=now)
    assert error.retry_after_s == 2 * 3600
