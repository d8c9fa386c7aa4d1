"""What the provider pool reports: counters, a frozen statistics snapshot, health checks, metrics.

The pool updates ``ProviderCounters`` on every attempt (cheap appends); the
snapshot, ``/health`` checks and Prometheus metrics are all computed from one
``PoolStatistics`` so they never disagree.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from concierge.observability import Check, Status
from concierge.protocol import Outcome
from concierge.providers.breaker import BreakerSnapshot, BreakerState
from concierge.providers.credits import CreditReading
from concierge.providers.keys import KeySnapshot, KeyState

LATENCY_SAMPLES = 1024
"""Recent attempt latencies kept per provider for the percentiles."""
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


@attrs.define(kw_only=True)
class ProviderCounters:
    """Mutable per-provider counters the pool updates on each attempt."""

    attempts: dict[Outcome, int] = attrs.field(factory=lambda: dict.fromkeys(Outcome, 0))
    latencies: deque[float] = attrs.field(factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    buckets: list[int] = attrs.field(factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_sum: float = 0.0
    latency_count: int = 0
    failovers: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None

    def record(self, outcome: Outcome, latency_s: float) -> None:
        self.attempts[outcome] += 1
        self.latencies.append(latency_s)
        index = bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.latency_sum += latency_s
        self.latency_count += 1


@attrs.frozen(kw_only=True)
class KeyStatistics:
    alias: str
    state: KeyState
    disabled_reason: str | None
    disabled_by: str | None
    cooling_for_s: float | None
    successes: int
    failures: int
    last_error: str | None
    credit: CreditReading | None

    @classmethod
    def of(cls, key: KeySnapshot, credit: CreditReading | None) -> KeyStatistics:
        return cls(
            alias=key.alias,
            state=key.state,
            disabled_reason=key.disabled_reason,
            disabled_by=key.disabled_by,
            cooling_for_s=key.cooling_for_s,
            successes=key.successes,
            failures=key.failures,
            last_error=key.last_error,
            credit=credit,
        )


@attrs.frozen(kw_only=True)
class ProviderStatistics:
    name: str
    kind: str
    model: str
    offline: bool
    breaker: BreakerSnapshot
    keys: tuple[KeyStatistics, ...]
    attempts: Mapping[Outcome, int]
    """Attempts by outcome; ``attempts[Outcome.OK]`` are the successes."""
    failovers: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    latency_buckets: tuple[tuple[float, int], ...]
    """Cumulative counts per upper bound (the last is +Inf)."""
    latency_sum_s: float
    latency_count: int
    last_error: str | None
    last_error_at: datetime | None
    tokens_today: int = 0
    """Tokens the provider's replies reported today (UTC)."""
    daily_tokens: int = 0
    """Its daily budget; 0 is none."""

    @property
    def budget_spent(self) -> bool:
        return 0 < self.daily_tokens <= self.tokens_today

    @property
    def successes(self) -> int:
        return self.attempts[Outcome.OK]

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.attempts.items() if outcome is not Outcome.OK)

    @property
    def available(self) -> bool:
        """Whether a request could go to this provider now (its breaker admits and a key is usable)."""
        breaker_ok = self.breaker.state is BreakerState.CLOSED or (
            self.breaker.state is BreakerState.HALF_OPEN and not self.breaker.probe_in_flight
        )
        return breaker_ok and any(k.state is KeyState.ENABLED for k in self.keys)

    @property
    def down(self) -> bool:
        """Open breaker, or no key left that is not disabled."""
        return self.breaker.state is BreakerState.OPEN or all(
            k.state is KeyState.DISABLED for k in self.keys
        )

    @classmethod
    def of(
        cls,
        *,
        name: str,
        kind: str,
        model: str,
        breaker: BreakerSnapshot,
        keys: tuple[KeyStatistics, ...],
        counters: ProviderCounters,
        tokens_today: int = 0,
        daily_tokens: int = 0,
    ) -> ProviderStatistics:
        ordered = sorted(counters.latencies)
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_S, counters.buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        cumulative.append((float("inf"), counters.latency_count))
        return cls(
            name=name,
            kind=kind,
            model=model,
            offline=kind == "offline",
            breaker=breaker,
            keys=keys,
            attempts=MappingProxyType(dict(counters.attempts)),
            failovers=counters.failovers,
            latency_p50_s=percentile(ordered, 0.50),
            latency_p95_s=percentile(ordered, 0.95),
            latency_p99_s=percentile(ordered, 0.99),
            latency_buckets=tuple(cumulative),
            latency_sum_s=counters.latency_sum,
            latency_count=counters.latency_count,
            last_error=counters.last_error,
            last_error_at=counters.last_error_at,
            tokens_today=tokens_today,
            daily_tokens=daily_tokens,
        )


@attrs.frozen(kw_only=True)
class PoolStatistics:
    providers: tuple[ProviderStatistics, ...]
    turns_completed: int
    turns_failed: int
    turns_in_flight: int

    def provider(self, name: str) -> ProviderStatistics:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(f"no provider named {name!r}")


# -- /health ------------------------------------------------------------------------------
def pool_health_checks(stats: PoolStatistics) -> list[Check]:
    """``llm:circuit`` per provider, ``llm:credits`` per polled key, ``llm:dailyTokens`` per
    network provider (today's tokens against its budget), ``llm:providers`` overall.

    Overall: pass when every network provider can take traffic; warn when some
    are down or have spent their day's tokens, or when all are but the offline
    provider still answers from the knowledge base (the daemon serves, degraded:
    taking it out of rotation would help nobody); fail when no provider at all can
    answer.
    """
    checks: list[Check] = []
    network = [p for p in stats.providers if not p.offline]
    for p in network:
        status = Status.WARN if p.down else Status.PASS
        usable = sum(1 for k in p.keys if k.state is KeyState.ENABLED)
        checks.append(
            Check(
                component="llm",
                measurement="circuit",
                component_id=p.name,
                status=status,
                observed_value=p.breaker.state.label,
                output=p.last_error if status is not Status.PASS else None,
                details={"keysUsable": usable, "keys": len(p.keys)},
            )
        )
        checks.append(
            Check(
                component="llm",
                measurement="dailyTokens",
                component_id=p.name,
                status=Status.WARN if p.budget_spent else Status.PASS,
                observed_value=p.tokens_today,
                observed_unit="tokens today",
                output="the day's token budget is spent" if p.budget_spent else None,
                details={"budget": p.daily_tokens or None},
            )
        )
        for k in p.keys:
            if k.credit is None:
                continue
            credit_status = Status.WARN if (k.credit.exhausted or k.credit.error) else Status.PASS
            checks.append(
                Check(
                    component="llm",
                    measurement="credits",
                    component_id=f"{p.name}/{k.alias}",
                    status=credit_status,
                    observed_value=k.credit.remaining,
                    observed_unit="USD",
                    output=k.credit.error,
                    time=k.credit.checked_at,
                    details={"limit": k.credit.limit, "usage": k.credit.usage},
                )
            )
    down = [
        p.name if p.down else f"{p.name} (day's tokens spent)"
        for p in network
        if p.down or p.budget_spent
    ]
    offline = any(p.offline for p in stats.providers)
    if network and len(down) == len(network):
        overall = Status.WARN if offline else Status.FAIL
        output = (
            "every network provider is down; answering from the knowledge base"
            if offline
            else "every provider is down"
        )
    elif down:
        overall, output = Status.WARN, f"down: {', '.join(down)}"
    else:
        overall, output = Status.PASS, None
    checks.append(
        Check(
            component="llm",
            measurement="providers",
            status=overall,
            observed_value=len(network) - len(down),
            observed_unit="providers up",
            output=output,
        )
    )
    return checks


# -- /metrics -------------------------------------------------------------------------------
def pool_metrics(stats: PoolStatistics) -> list[Metric]:
    attempts = CounterMetricFamily(
        "concierge_provider_attempts",
        "Provider attempts by outcome",
        labels=["provider", "outcome"],
    )
    failovers = CounterMetricFamily(
        "concierge_provider_failovers",
        "Turns that left this provider for another",
        labels=["provider"],
    )
    openings = CounterMetricFamily(
        "concierge_provider_breaker_openings",
        "Times the provider's breaker opened",
        labels=["provider"],
    )
    latency = HistogramMetricFamily(
        "concierge_provider_latency_seconds", "Latency of provider attempts", labels=["provider"]
    )
    breaker = GaugeMetricFamily(
        "concierge_provider_breaker_state",
        "Breaker state: 0 closed, 1 half-open, 2 open",
        labels=["provider"],
    )
    key_state = GaugeMetricFamily(
        "concierge_provider_key_state",
        "Key state: 0 enabled, 1 cooling, 2 disabled",
        labels=["provider", "key"],
    )
    limit = GaugeMetricFamily(
        "concierge_provider_credit_limit",
        "Key credit limit (absent: unlimited)",
        labels=["provider", "key"],
    )
    remaining = GaugeMetricFamily(
        "concierge_provider_credit_remaining",
        "Key credit left (absent: unlimited)",
        labels=["provider", "key"],
    )
    usage = GaugeMetricFamily(
        "concierge_provider_credit_usage", "Key credit used, all time", labels=["provider", "key"]
    )
    tokens = GaugeMetricFamily(
        "concierge_provider_tokens_today",
        "Tokens the provider's replies reported today (UTC)",
        labels=["provider"],
    )
    budget = GaugeMetricFamily(
        "concierge_provider_daily_token_budget",
        "Tokens the provider may use per UTC day (absent: no budget)",
        labels=["provider"],
    )
    turns = CounterMetricFamily(
        "concierge_provider_turns", "Turns answered by the pool", labels=["result"]
    )
    in_flight = GaugeMetricFamily("concierge_provider_turns_in_flight", "Turns being worked on")
    for p in stats.providers:
        for outcome, count in p.attempts.items():
            attempts.add_metric([p.name, outcome.value], count)
        failovers.add_metric([p.name], p.failovers)
        openings.add_metric([p.name], p.breaker.total_openings)
        latency.add_metric(
            [p.name],
            [(_bound(b), float(n)) for b, n in p.latency_buckets],
            sum_value=p.latency_sum_s,
        )
        breaker.add_metric([p.name], int(p.breaker.state))
        if not p.offline:
            tokens.add_metric([p.name], p.tokens_today)
            if p.daily_tokens:
                budget.add_metric([p.name], p.daily_tokens)
        for k in p.keys:
            key_state.add_metric([p.name, k.alias], int(k.state))
            if k.credit is not None and k.credit.checked_at is not None:
                if k.credit.limit is not None:
                    limit.add_metric([p.name, k.alias], k.credit.limit)
                if k.credit.remaining is not None:
                    remaining.add_metric([p.name, k.alias], k.credit.remaining)
                if k.credit.usage is not None:
                    usage.add_metric([p.name, k.alias], k.credit.usage)
    turns.add_metric(["completed"], stats.turns_completed)
    turns.add_metric(["failed"], stats.turns_failed)
    in_flight.add_metric([], stats.turns_in_flight)
    return [
        attempts,
        failovers,
        openings,
        latency,
        breaker,
        key_state,
        limit,
        remaining,
        usage,
        tokens,
        budget,
        turns,
        in_flight,
    ]


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
