"""The pool through the real SDK adapters against the loopback API fakes (real clock, real sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from concierge.protocol import Completion, Outcome
from concierge.providers import BreakerState
from concierge.providers.anthropic import AnthropicAdapter
from concierge.providers.gemini import GeminiAdapter
from concierge.providers.keys import KeyState
from concierge.providers.openai_compat import OpenRouterAdapter
from concierge.settings import PoolSettings
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.llm_common import Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.providers.conftest import MakeSettings
from tests.providers.pool_helpers import ask_pool, running_pool
from tests.providers.scripted import pool_settings
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def adapters(
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    make_settings: MakeSettings,
) -> AsyncIterator[tuple[AnthropicAdapter, GeminiAdapter]]:
    claude = AnthropicAdapter(make_settings("anthropic", anthropic_fake.url, timeout_s=1.0))
    gemini = GeminiAdapter(make_settings("gemini", gemini_fake.url, timeout_s=5.0))
    try:
        yield claude, gemini
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await claude.aclose()
            await gemini.aclose()


def settings_for(*adapters: AnthropicAdapter | GeminiAdapter | OpenRouterAdapter) -> PoolSettings:
    return pool_settings(*(a._settings for a in adapters))


async def test_an_overloaded_first_provider_fails_over_to_the_next(
    adapters: tuple[AnthropicAdapter, GeminiAdapter],
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> None:
    claude, gemini = adapters
    anthropic_fake.default = FakeAnthropic.overloaded()
    gemini_fake.push(Scripted(text="Réponse de Gemini"))
    async with running_pool([claude, gemini], settings_for(claude, gemini)) as (pool, inbox):
        result = await ask_pool(inbox, timeout_s=10.0)
        stats = pool.statistics()
    assert isinstance(result, Completion)
    assert (result.provider, result.text, result.attempts) == ("gemini", "Réponse de Gemini", 2)
    assert len(anthropic_fake.requests) == 1
    assert stats.provider("anthropic").attempts[Outcome.TRANSIENT] == 1
    assert stats.provider("anthropic").breaker.window_failures == 1


async def test_a_hanging_first_provider_fails_over_at_its_timeout(
    adapters: tuple[AnthropicAdapter, GeminiAdapter],
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> None:
    claude, gemini = adapters
    anthropic_fake.default = Scripted(hang=True)
    async with running_pool([claude, gemini], settings_for(claude, gemini)) as (pool, inbox):
        result = await ask_pool(inbox, timeout_s=10.0)
        stats = pool.statistics()
    assert isinstance(result, Completion)
    assert result.provider == "gemini"
    assert stats.provider("anthropic").attempts[Outcome.TRANSIENT] == 1


async def test_a_throttled_key_rotates_to_the_next_key_of_the_same_provider(
    adapters: tuple[AnthropicAdapter, GeminiAdapter],
    anthropic_fake: FakeAnthropic,
) -> None:
    claude, gemini = adapters
    anthropic_fake.push(FakeAnthropic.rate_limited(retry_after_s=30))
    async with running_pool([claude, gemini], settings_for(claude, gemini)) as (pool, inbox):
        result = await ask_pool(inbox, timeout_s=10.0)
        keys = pool.statistics().provider("anthropic").keys
    assert isinstance(result, Completion)
    assert (result.provider, result.key_alias) == ("anthropic", "spare")
    assert [r.key for r in anthropic_fake.requests] == ["sk-test-main", "sk-test-spare"]
    assert keys[0].cooling_for_s is not None
    assert keys[0].cooling_for_s > 20


async def test_a_hundred_concurrent_turns_are_all_in_flight_at_once(
    anthropic_fake: FakeAnthropic,
    make_settings: MakeSettings,
) -> None:
    claude = AnthropicAdapter(make_settings("anthropic", anthropic_fake.url, timeout_s=30.0))
    anthropic_fake.hold()
    results: list[object] = []
    try:
        async with running_pool([claude], settings_for(claude)) as (pool, inbox):

            async def one(i: int) -> None:
                results.append(await ask_pool(inbox, cid=f"c{i}", timeout_s=30.0))

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(one, i)
                with trio.fail_after(20):
                    await anthropic_fake.wait_in_flight(90)
                anthropic_fake.release()
            stats = pool.statistics()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await claude.aclose()
    assert anthropic_fake.max_in_flight >= 90
    assert len(results) == 100
    assert all(isinstance(r, Completion) and r.provider == "anthropic" for r in results)
    assert stats.turns_completed == 100
    assert stats.provider("anthropic").breaker.state is BreakerState.CLOSED


async def test_openrouter_keys_leave_rotation_without_credit_and_return_with_it(
    openai_fake: FakeOpenAI,
    make_settings: MakeSettings,
) -> None:
    router = OpenRouterAdapter(
        make_settings("openai", f"{openai_fake.url}/api/v1", name="openrouter")
    )
    openai_fake.set_credit("sk-test-main", limit=10.0, remaining=0.0, usage=10.0)
    settings = pool_settings(router._settings, credit_poll_s=0.2)
    try:
        async with running_pool([router], settings) as (pool, inbox):

            def key_states() -> list[KeyState]:
                return [k.state for k in pool.statistics().provider("openrouter").keys]

            await eventually(
                lambda: key_states() == [KeyState.DISABLED, KeyState.ENABLED],
                "the key without credit to leave rotation",
            )
            results = [await ask_pool(inbox, timeout_s=10.0) for _ in range(3)]
            assert all(isinstance(r, Completion) and r.key_alias == "spare" for r in results)
            credit = pool.statistics().provider("openrouter").keys[0].credit
            assert credit is not None
            assert (credit.limit, credit.remaining, credit.usage) == (10.0, 0.0, 10.0)

            openai_fake.set_credit("sk-test-main", limit=20.0, remaining=10.0, usage=10.0)
            await eventually(
                lambda: key_states() == [KeyState.ENABLED, KeyState.ENABLED],
                "the key to return once its credit is back",
            )

            # a 402 on a chat call disables the key at once and triggers a poll
            openai_fake.push(FakeOpenAI.no_credit(key="sk-test-main"))
            openai_fake.set_credit("sk-test-main", limit=20.0, remaining=0.0, usage=20.0)
            polls_before = len(openai_fake.requests_to("key"))
            results = [await ask_pool(inbox, timeout_s=10.0) for _ in range(2)]
            assert all(isinstance(r, Completion) and r.key_alias == "spare" for r in results)
            assert key_states()[0] is KeyState.DISABLED
            await eventually(
                lambda: len(openai_fake.requests_to("key")) > polls_before,
                "a credit poll after the 402",
            )
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await router.aclose()
