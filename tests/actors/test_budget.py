"""The daily token budgets through the whole subtree, with a real provider's wire format.

The Anthropic fake reports the usage of each answer as the real API does; the
budgets count those figures, in memory and in the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from concierge.domain import Reply as R, utc_today
from concierge.observability import Status
from concierge.providers import OfflineAdapter
from concierge.providers.anthropic import AnthropicAdapter
from concierge.settings import ApiKey, ProviderSettings
from tests import shipped
from tests.actors.harness import Harness, running_concierge
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.llm_common import Scripted
from tests.shipped import reply_text

pytestmark = pytest.mark.anyio

PER_ANSWER = 500  # tokens the fake reports for each answer: 400 in, 100 out


def claude_settings(fake: FakeAnthropic, *, daily_tokens: int = 0) -> ProviderSettings:
    return ProviderSettings(
        name="anthropic",
        kind="anthropic",
        model="claude-test",
        base_url=fake.url,
        keys=(ApiKey(alias="main", secret="sk-ant-test"),),
        timeout_s=5.0,
        daily_tokens=daily_tokens,
    )


@asynccontextmanager
async def concierge_on_claude(
    tmp_path: Path,
    fake: FakeAnthropic,
    *,
    provider_daily_tokens: int = 0,
    offline: bool = True,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """The subtree with Claude (through the fake) first and, unless ``offline`` is false,
    the knowledge base behind it."""
    settings = claude_settings(fake, daily_tokens=provider_daily_tokens)
    claude = AnthropicAdapter(settings)
    kb = [OfflineAdapter(shipped.knowledge(), shipped.languages())] if offline else []
    try:
        async with running_concierge(
            tmp_path, adapters=[claude, *kb], network=[settings], **overrides
        ) as h:
            yield h
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await claude.aclose()


async def test_an_abusive_persons_calls_stop_at_their_budget_while_others_go_on(
    tmp_path: Path,
) -> None:
    async with FakeAnthropic.serve() as fake:
        fake.default = Scripted(text="Réponse de Claude", tokens_in=400, tokens_out=100)
        async with concierge_on_claude(tmp_path, fake, user_daily_tokens=1200) as h:
            reports = [
                await h.ask(f"A quelle heure est la messe dimanche ? ({n})", user="abuser")
                for n in range(6)
            ]
            # 500, 1000, then 1500 tokens: the third answer crosses the budget of 1200.
            assert len(fake.requests) == 3
            assert [r.provider for r in reports] == ["anthropic"] * 3 + ["offline"] * 3
            notice = reply_text(R.BUDGET_EXHAUSTED, "fr")
            for capped in reports[3:]:
                assert capped.reply.endswith(notice)
                assert "10h30" in capped.reply  # the knowledge base's answer, with the notice
            # Everyone else goes on with the provider.
            for user in ("alice", "bob"):
                report = await h.ask("A quelle heure est la messe dimanche ?", user=user)
                assert report.provider == "anthropic"
                assert report.reply == "Réponse de Claude"
            assert len(fake.requests) == 5
            stats = h.service.budget.statistics()
            assert (stats.over_budget, stats.largest, stats.tokens) == (1, 1500, 2500)
            assert h.service.turn_metrics.over_budget == 3
            (check,) = [c for c in h.service.health_checks() if c.key == "people:dailyTokens"]
            assert check.status is Status.PASS
            assert check.details["peopleOverBudget"] == 1
            assert check.details["budgetPerPerson"] == 1200
            # The store counted the same, keyed by the person's user id.
            abuser = await h.store.user_for_key("console:abuser")
            assert abuser is not None
            usage = await h.store.usage_on(utc_today())
            assert usage.users[abuser.user_id] == 1500
            assert usage.providers == {"anthropic": 2500}


async def test_a_restart_keeps_what_a_person_spent_today(tmp_path: Path) -> None:
    async with FakeAnthropic.serve() as fake:
        fake.default = Scripted(text="Réponse", tokens_in=400, tokens_out=100)
        async with concierge_on_claude(tmp_path, fake, user_daily_tokens=1000) as h:
            for _ in range(2):
                assert (await h.ask("Quand est la messe ?", user="u1")).provider == "anthropic"
        async with concierge_on_claude(tmp_path, fake, user_daily_tokens=1000) as h:
            report = await h.ask("Quand est la messe ?", user="u1")
            assert report.provider == "offline"
            assert report.reply.endswith(reply_text(R.BUDGET_EXHAUSTED, "fr"))
            assert (await h.ask("Quand est la messe ?", user="u2")).provider == "anthropic"
        assert len(fake.requests) == 3


async def test_a_provider_past_its_budget_leaves_the_answers_to_the_knowledge_base(
    tmp_path: Path,
) -> None:
    async with FakeAnthropic.serve() as fake:
        fake.default = Scripted(text="Réponse", tokens_in=400, tokens_out=100)
        async with concierge_on_claude(tmp_path, fake, provider_daily_tokens=1000) as h:
            providers = [
                (await h.ask("A quelle heure est la messe dimanche ?", user=f"u{n}")).provider
                for n in range(3)
            ]
            assert providers == ["anthropic", "anthropic", "offline"]
            assert len(fake.requests) == 2
            checks = {c.key: c for c in h.pool.health_checks()}
            spent = checks["llm:dailyTokens"]
            assert (spent.status, spent.observed_value, spent.details) == (
                Status.WARN,
                1000,
                {"budget": 1000},
            )
            assert checks["llm:providers"].status is Status.WARN
            metrics = {
                (s.name, tuple(s.labels.items())): s.value
                for family in h.pool.metrics()
                for s in family.samples
            }
            labels = (("provider", "anthropic"),)
            assert metrics[("concierge_provider_tokens_today", labels)] == 1000
            assert metrics[("concierge_provider_daily_token_budget", labels)] == 1000


async def test_without_an_offline_provider_a_capped_person_gets_the_notice_alone(
    tmp_path: Path,
) -> None:
    async with FakeAnthropic.serve() as fake:
        fake.default = Scripted(text="Réponse", tokens_in=400, tokens_out=100)
        async with concierge_on_claude(tmp_path, fake, offline=False, user_daily_tokens=100) as h:
            assert (await h.ask("Salut, une question : la messe ?")).provider == "anthropic"
            report = await h.ask("Et la messe de samedi ?")
            assert report.reply == reply_text(R.BUDGET_EXHAUSTED, "fr")
            assert h.service.turn_metrics.provider_failures == 0
        assert len(fake.requests) == 1
