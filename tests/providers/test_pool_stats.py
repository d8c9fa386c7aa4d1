"""What the pool reports: statistics snapshot, /health checks and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from actors import ProviderPool
from concierge.observability import Status
from concierge.observability.checks import Observable
from concierge.protocol import Outcome
from concierge.providers import BreakerState
from concierge.providers.keys import KeyState
from concierge.providers.pool_stats import percentile
from tests.providers.pool_helpers import ask_pool, credits_read, running_pool
from tests.providers.scripted import (
    Credit,
    Fail,
    Reply,
    ScriptedAdapter,
    ScriptedCreditAdapter,
    pool_settings,
    provider_settings,
)

pytestmark = pytest.mark.anyio

TRANSIENT = Fail(outcome=Outcome.TRANSIENT, detail="500 api_error")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0


@pytest.mark.autojump
async def test_statistics_count_outcomes_latency_and_last_error() -> None:
    primary = ScriptedAdapter("primary")
    primary.push(*(Reply(delay_s=i / 10) for i in range(1, 11)), TRANSIENT)
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary", keys=("a", "b")), provider_settings("secondary")
    )
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        for _ in range(11):
            await ask_pool(inbox)
        stats = pool.statistics()
    p = stats.provider("primary")
    assert p.successes == 10
    assert p.attempts[Outcome.TRANSIENT] == 1
    assert p.failures == 1
    assert p.failovers == 1
    assert p.last_error == "transient: 500 api_error"
    assert p.last_error_at is not None
    assert (p.latency_p50_s, p.latency_p95_s, p.latency_p99_s) == pytest.approx((0.5, 1.0, 1.0))
    assert [(k.alias, k.successes) for k in p.keys] == [("a", 5), ("b", 5)]
    assert p.breaker.state is BreakerState.CLOSED
    assert stats.turns_completed == 11
    assert stats.turns_failed == 0
    assert stats.turns_in_flight == 0


async def test_health_passes_when_every_provider_is_up() -> None:
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    async with running_pool(
        [ScriptedAdapter("primary"), ScriptedAdapter("secondary")], settings
    ) as (pool, _):
        checks = list(pool.health_checks())
    assert {c.key for c in checks} == {"llm:circuit", "llm:dailyTokens", "llm:providers"}
    assert all(c.status is Status.PASS for c in checks)
    assert [c.component_id for c in checks if c.measurement == "circuit"] == [
        "primary",
        "secondary",
    ]


async def test_an_open_breaker_warns_and_all_providers_down_fails() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), consecutive=1
    )
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        await ask_pool(inbox)
        checks = {(c.key, c.component_id): c for c in pool.health_checks()}
        assert checks[("llm:circuit", "primary")].status is Status.WARN
        assert checks[("llm:circuit", "primary")].observed_value == "open"
        assert checks[("llm:circuit", "secondary")].status is Status.PASS
        assert checks[("llm:providers", None)].status is Status.WARN

        secondary.default = Fail(outcome=Outcome.DEAD_KEY, detail="401")
        await ask_pool(inbox)
        checks = {(c.key, c.component_id): c for c in pool.health_checks()}
        assert checks[("llm:circuit", "secondary")].status is Status.WARN
        assert checks[("llm:providers", None)].status is Status.FAIL


async def test_with_the_offline_provider_all_network_providers_down_only_warns() -> None:
    primary = ScriptedAdapter("primary", default=Fail(outcome=Outcome.DEAD_KEY, detail="401"))
    offline = ScriptedAdapter("offline", kind="offline")
    settings = pool_settings(provider_settings("primary"))
    async with running_pool([primary, offline], settings) as (pool, inbox):
        await ask_pool(inbox)
        overall = [c for c in pool.health_checks() if c.measurement == "providers"]
    assert overall[0].status is Status.WARN
    assert overall[0].output is not None
    assert "knowledge base" in overall[0].output


async def test_offline_only_passes() -> None:
    offline = ScriptedAdapter("offline", kind="offline")
    async with running_pool([offline], pool_settings()) as (pool, inbox):
        await ask_pool(inbox)
        checks = list(pool.health_checks())
    assert [c.status for c in checks] == [Status.PASS]


@pytest.mark.autojump
async def test_credits_show_in_health_and_metrics() -> None:
    router = ScriptedCreditAdapter("openrouter")
    router.credits["k1"] = Credit(limit=None, remaining=None, usage=1.25)
    router.credits["k2"] = Credit(limit=5.0, remaining=0.0, usage=5.0)
    settings = pool_settings(provider_settings("openrouter", kind="openai", keys=("k1", "k2")))
    async with running_pool([router], settings) as (pool, _):
        await credits_read(pool, "openrouter")
        credit_checks = {
            c.component_id: c for c in pool.health_checks() if c.measurement == "credits"
        }
        text = exposition(pool)
    assert credit_checks["openrouter/k1"].status is Status.PASS
    assert credit_checks["openrouter/k2"].status is Status.WARN
    assert credit_checks["openrouter/k2"].observed_value == 0.0
    assert 'concierge_provider_credit_usage{key="k1",provider="openrouter"} 1.25' in text
    assert 'concierge_provider_credit_remaining{key="k2",provider="openrouter"} 0.0' in text
    assert 'concierge_provider_credit_remaining{key="k1"' not in text  # unlimited: no sample
    assert 'concierge_provider_key_state{key="k2",provider="openrouter"} 2.0' in text
    assert pool.statistics().provider("openrouter").keys[1].state is KeyState.DISABLED


@pytest.mark.autojump
async def test_metrics_expose_attempts_latency_and_breaker_state() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary", default=Reply(delay_s=0.3))
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), consecutive=1
    )
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        await ask_pool(inbox)
        await ask_pool(inbox)
        text = exposition(pool)
    assert 'concierge_provider_attempts_total{outcome="transient",provider="primary"} 1.0' in text
    assert 'concierge_provider_attempts_total{outcome="ok",provider="secondary"} 2.0' in text
    assert 'concierge_provider_breaker_state{provider="primary"} 2.0' in text
    assert 'concierge_provider_breaker_state{provider="secondary"} 0.0' in text
    assert 'concierge_provider_latency_seconds_bucket{le="0.25",provider="secondary"} 0.0' in text
    assert 'concierge_provider_latency_seconds_bucket{le="0.5",provider="secondary"} 2.0' in text
    assert 'concierge_provider_latency_seconds_count{provider="secondary"} 2.0' in text
    assert 'concierge_provider_failovers_total{provider="primary"} 1.0' in text
    assert 'concierge_provider_turns_total{result="completed"} 2.0' in text


def exposition(source: Observable) -> str:
    class Adapter(Collector):
        def collect(self) -> Iterable[Metric]:
            return source.metrics()

    registry = CollectorRegistry()
    registry.register(Adapter())
    return generate_latest(registry).decode()


async def test_the_pool_is_an_observable_component() -> None:
    pool = ProviderPool(
        adapters=[ScriptedAdapter("primary")], settings=pool_settings(provider_settings("primary"))
    )
    observable: Observable = pool  # checked by mypy: /health and /metrics gather it
    assert [c.key for c in observable.health_checks()] == [
        "llm:circuit",
        "llm:dailyTokens",
        "llm:providers",
    ]
    assert {m.name for m in observable.metrics()} >= {
        "concierge_provider_tokens_today",
        "concierge_provider_attempts",
        "concierge_provider_latency_seconds",
        "concierge_provider_breaker_state",
        "concierge_provider_key_state",
        "concierge_provider_credit_remaining",
    }
