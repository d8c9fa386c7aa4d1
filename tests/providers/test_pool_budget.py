"""The provider pool's daily token budgets with scripted adapters (8 tokens per answer)."""

from __future__ import annotations

import attrs
import pytest
from structlog.testing import capture_logs

from concierge.protocol import Completion, CompletionFailed, DailyUsage
from concierge.providers import OfflineAdapter
from concierge.settings import ProviderSettings
from tests import shipped
from tests.days import MONDAY, TUESDAY, Calendar
from tests.providers.pool_helpers import ask_pool, running_pool
from tests.providers.scripted import Reply, ScriptedAdapter, pool_settings, provider_settings

pytestmark = pytest.mark.anyio


def budgeted(name: str, tokens: int) -> ProviderSettings:
    return attrs.evolve(provider_settings(name), daily_tokens=tokens)


async def test_a_provider_past_its_days_tokens_is_skipped_until_the_next_day() -> None:
    first, second = ScriptedAdapter("first"), ScriptedAdapter("second", default=Reply(text="2"))
    settings = pool_settings(budgeted("first", 16), provider_settings("second"))
    calendar = Calendar()
    with capture_logs() as logs:
        async with running_pool([first, second], settings, today=calendar) as (pool, inbox):
            answered = [(await ask_pool(inbox)) for _ in range(3)]
            stats = pool.statistics()
            calendar.day = TUESDAY
            tuesday = await ask_pool(inbox)
    assert [r.provider for r in answered if isinstance(r, Completion)] == [
        "first",
        "first",
        "second",
    ]
    assert isinstance(tuesday, Completion)
    assert tuesday.provider == "first"
    assert (stats.provider("first").tokens_today, stats.provider("first").daily_tokens) == (16, 16)
    assert stats.provider("first").budget_spent
    assert stats.provider("second").tokens_today == 8
    spent = [e for e in logs if e["event"] == "provider.budget_spent"]
    assert [(e["provider"], e["tokens"], e["budget"]) for e in spent] == [("first", 16, 16)]


async def test_the_days_spending_survives_a_restart() -> None:
    first, second = ScriptedAdapter("first"), ScriptedAdapter("second")
    settings = pool_settings(budgeted("first", 100), provider_settings("second"))
    calendar = Calendar()
    async with running_pool([first, second], settings, today=calendar) as (pool, inbox):
        pool.restore_usage(DailyUsage(day=MONDAY, users={}, providers={"first": 100}))
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.provider == "second"
    assert first.calls == []


async def test_a_request_kept_off_the_network_is_answered_by_the_offline_provider_alone() -> None:
    network = ScriptedAdapter("claude")
    offline = OfflineAdapter(shipped.knowledge(), shipped.languages())
    settings = pool_settings(provider_settings("claude"))
    async with running_pool([network, offline], settings) as (_pool, inbox):
        result = await ask_pool(
            inbox, query="A quelle heure est la messe dimanche ?", network=False, timeout_s=5.0
        )
    assert isinstance(result, Completion)
    assert result.provider == "offline"
    assert "10h30" in result.text
    assert network.calls == []


async def test_kept_off_the_network_without_an_offline_provider_the_request_fails_clearly() -> None:
    network = ScriptedAdapter("claude")
    async with running_pool([network], pool_settings(provider_settings("claude"))) as (_, inbox):
        result = await ask_pool(inbox, network=False, timeout_s=5.0)
    assert isinstance(result, CompletionFailed)
    assert "only the offline provider may answer" in result.reason
    assert network.calls == []
