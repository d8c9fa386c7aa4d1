"""Daily token budgets (OWASP LLM10, unbounded consumption): per person, per provider.

Tokens are what the providers report for each answer (input and output), counted
per UTC day. The person is the store's user id, so the count follows them across
channels once their identities are merged. The counts live in memory, where every
turn reads them at no cost, and in the store (``user_usage``, ``provider_usage``,
kept with each interaction), from which a restarted daemon takes the day's counts
back. A budget of 0 is no budget.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import date
from typing import Generic, TypeVar

import attrs
from prometheus_client.core import GaugeMetricFamily, Metric

from concierge.observability import Check, Status
from concierge.protocol import DailyUsage, utcnow

K = TypeVar("K", bound=Hashable)


def utc_today() -> date:
    return utcnow().date()


class DailyTokens(Generic[K]):
    """Tokens spent today per key (a user id, a provider name); a new day starts from zero."""

    def __init__(self, *, today: Callable[[], date] = utc_today) -> None:
        self._today = today
        self._day = today()
        self._used: dict[K, int] = {}

    def _current(self) -> dict[K, int]:
        day = self._today()
        if day != self._day:
            self._day, self._used = day, {}
        return self._used

    @property
    def day(self) -> date:
        self._current()
        return self._day

    def restore(self, day: date, used: Mapping[K, int]) -> None:
        """Take back what the store counted for ``day`` (ignored unless ``day`` is today)."""
        current = self._current()
        if day == self._day:
            for key, tokens in used.items():
                current[key] = max(current.get(key, 0), tokens)

    def used(self, key: K) -> int:
        return self._current().get(key, 0)

    def add(self, key: K, tokens: int) -> int:
        """Count ``tokens`` more for ``key``; return its total today."""
        current = self._current()
        total = current.get(key, 0) + max(0, tokens)
        current[key] = total
        return total

    def totals(self) -> Mapping[K, int]:
        return dict(self._current())


@attrs.frozen(kw_only=True)
class BudgetStatistics:
    day: date
    budget: int
    """Tokens per person per day; 0 is no budget."""
    people: int
    """People who used any tokens today."""
    tokens: int
    over_budget: int
    largest: int
    """The most tokens one person used today."""


class UserBudget:
    """A daily token budget per person, shared by every conversation."""

    def __init__(self, tokens_per_day: int, *, today: Callable[[], date] = utc_today) -> None:
        if tokens_per_day < 0:
            raise ValueError(f"a daily token budget cannot be negative, got {tokens_per_day}")
        self.tokens_per_day = tokens_per_day
        self._used: DailyTokens[int] = DailyTokens(today=today)

    def restore(self, usage: DailyUsage) -> None:
        self._used.restore(usage.day, usage.users)

    def exhausted(self, user_id: int) -> bool:
        """Whether ``user_id`` has used their day's tokens (never, without a budget)."""
        return 0 < self.tokens_per_day <= self._used.used(user_id)

    def spend(self, user_id: int, tokens: int) -> bool:
        """Count an answer's tokens; return whether they took the person past the budget."""
        before = self._used.used(user_id)
        after = self._used.add(user_id, tokens)
        return self.tokens_per_day > 0 and before < self.tokens_per_day <= after

    def used(self, user_id: int) -> int:
        return self._used.used(user_id)

    def statistics(self) -> BudgetStatistics:
        totals = self._used.totals()
        budget = self.tokens_per_day
        return BudgetStatistics(
            day=self._used.day,
            budget=budget,
            people=len(totals),
            tokens=sum(totals.values()),
            over_budget=sum(1 for t in totals.values() if 0 < budget <= t),
            largest=max(totals.values(), default=0),
        )

    def health_checks(self) -> Iterable[Check]:
        """``people:dailyTokens``: today's tokens, against the budget each person has.

        It passes whatever people spend: a person at their budget is answered from
        the knowledge base, which is the budget working, not the daemon failing.
        """
        s = self.statistics()
        yield Check(
            component="people",
            measurement="dailyTokens",
            status=Status.PASS,
            observed_value=s.tokens,
            observed_unit="tokens today",
            details={
                "budgetPerPerson": s.budget or None,
                "people": s.people,
                "peopleOverBudget": s.over_budget,
                "largestPerPerson": s.largest,
                "day": s.day.isoformat(),
            },
        )

    def metrics(self) -> Iterable[Metric]:
        s = self.statistics()
        return [
            GaugeMetricFamily(
                "concierge_person_daily_token_budget",
                "Tokens one person may use per UTC day (0: none)",
                value=s.budget,
            ),
            GaugeMetricFamily(
                "concierge_people_tokens_today",
                "Tokens all people used today (providers' reports)",
                value=s.tokens,
            ),
            GaugeMetricFamily(
                "concierge_person_tokens_today_max",
                "The most tokens one person used today",
                value=s.largest,
            ),
            GaugeMetricFamily(
                "concierge_people_over_budget",
                "People who used their day's tokens",
                value=s.over_budget,
            ),
        ]
