from __future__ import annotations

from datetime import date

import pytest

from concierge.domain import DailyTokens, UserBudget
from concierge.protocol import DailyUsage
from tests.days import MONDAY, TUESDAY, Calendar


def test_counts_start_from_zero_each_utc_day() -> None:
    calendar = Calendar()
    tokens: DailyTokens[str] = DailyTokens(today=calendar)
    assert tokens.add("anthropic", 300) == 300
    assert tokens.add("anthropic", 200) == 500
    assert tokens.add("anthropic", -50) == 500  # nothing is ever taken back
    calendar.day = TUESDAY
    assert tokens.used("anthropic") == 0
    assert tokens.day == TUESDAY


def test_only_todays_counts_are_restored() -> None:
    calendar = Calendar()
    tokens: DailyTokens[int] = DailyTokens(today=calendar)
    tokens.add(7, 100)
    tokens.restore(MONDAY, {7: 50, 8: 900})
    tokens.restore(date(2026, 3, 1), {9: 10})
    assert tokens.totals() == {7: 100, 8: 900}


def test_a_person_is_over_budget_once_their_answers_reach_it() -> None:
    budget = UserBudget(1000, today=Calendar())
    assert not budget.spend(1, 600)
    assert not budget.exhausted(1)
    assert budget.spend(1, 600)  # this answer took them past it
    assert budget.exhausted(1)
    assert not budget.spend(1, 10)  # already past: not crossed again
    assert not budget.exhausted(2)
    stats = budget.statistics()
    assert (stats.people, stats.tokens, stats.over_budget, stats.largest) == (1, 1210, 1, 1210)


def test_a_restart_takes_back_the_days_spending() -> None:
    budget = UserBudget(1000, today=Calendar())
    budget.restore(DailyUsage(day=MONDAY, users={1: 1000, 2: 10}, providers={}))
    assert budget.exhausted(1)
    assert not budget.exhausted(2)


def test_a_zero_budget_is_no_budget() -> None:
    budget = UserBudget(0, today=Calendar())
    assert not budget.spend(1, 10**9)
    assert not budget.exhausted(1)
    assert budget.statistics().over_budget == 0
    with pytest.raises(ValueError, match="negative"):
        UserBudget(-1)
