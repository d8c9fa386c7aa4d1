"""The pool and its breakers: open providers are skipped, probed once, and bypassed when all are open."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from structlog.testing import capture_logs

from actors import ProviderPool
from concierge.protocol import Completion, CompletionFailed, CompletionRequest, Outcome
from concierge.providers import BreakerState
from tests.providers.pool_helpers import ask_pool, running_pool
from tests.providers.scripted import (
    Fail,
    Hang,
    Reply,
    ScriptedAdapter,
    pool_settings,
    provider_settings,
)

pytestmark = pytest.mark.anyio

TRANSIENT = Fail(outcome=Outcome.TRANSIENT, detail="503 unavailable")


@pytest.mark.autojump
async def test_an_open_breaker_sends_traffic_elsewhere_until_one_probe_closes_it() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), consecutive=3, open_s=30.0
    )
    with capture_logs() as logs:
        async with running_pool([primary, secondary], settings) as (pool, inbox):
            for i in range(3):
                await ask_pool(inbox, cid=f"c{i}")
            assert pool.statistics().provider("primary").breaker.state is BreakerState.OPEN
            for i in range(5):
                result = await ask_pool(inbox, cid=f"d{i}")
                assert isinstance(result, Completion)
                assert result.provider == "secondary"
            assert len(primary.calls) == 3
            await trio.sleep(30.0 * 1.1)
            primary.default = Reply(text="back")
            result = await ask_pool(inbox, cid="probe")
            assert isinstance(result, Completion)
            assert result.provider == "primary"
            assert pool.statistics().provider("primary").breaker.state is BreakerState.CLOSED
    opened = [e for e in logs if e["event"] == "provider.breaker_opened"]
    assert len(opened) == 1
    assert opened[0]["correlation_id"] == "c2"
    assert [e["correlation_id"] for e in logs if e["event"] == "provider.breaker_closed"] == [
        "probe"
    ]
    assert any(e["event"] == "provider.breaker_half_open" for e in logs)


@pytest.mark.autojump
async def test_half_open_lets_exactly_one_of_many_concurrent_requests_probe() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), consecutive=1, open_s=10.0
    )
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        await ask_pool(inbox)
        await trio.sleep(11.0)
        primary.default = Reply(delay_s=2.0)
        calls_before = len(primary.calls)
        results: list[object] = []

        async def one(i: int) -> None:
            results.append(await ask_pool(inbox, cid=f"c{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert len(primary.calls) - calls_before == 1
        assert sum(1 for r in results if isinstance(r, Completion) and r.provider == "primary") == 1
        assert (
            sum(1 for r in results if isinstance(r, Completion) and r.provider == "secondary") == 9
        )
        assert pool.statistics().provider("primary").breaker.state is BreakerState.CLOSED


@pytest.mark.autojump
async def test_throttling_and_dead_keys_never_open_the_breaker() -> None:
    primary = ScriptedAdapter("primary")
    for _ in range(4):
        primary.push(
            Fail(outcome=Outcome.THROTTLED, retry_after_s=0.5), Fail(outcome=Outcome.REQUEST_ERROR)
        )
    settings = pool_settings(
        provider_settings("primary", keys=("k1", "k2", "k3", "k4", "k5")),
        consecutive=2,
        min_calls=2,
    )
    async with running_pool([primary], settings) as (pool, inbox):
        for _ in range(4):
            await ask_pool(inbox)
        primary.by_key["k5"] = Fail(outcome=Outcome.DEAD_KEY)
        primary.by_key["k4"] = Fail(outcome=Outcome.DEAD_KEY)
        for _ in range(3):
            await ask_pool(inbox)
        stats = pool.statistics().provider("primary")
    assert stats.breaker.state is BreakerState.CLOSED
    assert stats.breaker.total_openings == 0
    assert stats.attempts[Outcome.THROTTLED] == 4
    assert stats.attempts[Outcome.REQUEST_ERROR] == 4


@pytest.mark.autojump
async def test_when_every_provider_is_open_one_request_goes_to_the_least_recently_opened() -> None:
    first = ScriptedAdapter("first", default=TRANSIENT)
    second = ScriptedAdapter("second", default=TRANSIENT)
    settings = pool_settings(
        provider_settings("first"),
        provider_settings("second"),
        consecutive=1,
        open_s=100.0,
        max_attempts=2,
    )
    async with running_pool([first, second], settings) as (pool, inbox):
        result = await ask_pool(inbox, cid="opens-both")
        assert isinstance(result, CompletionFailed)
        stats = pool.statistics()
        assert [p.breaker.state for p in stats.providers] == [BreakerState.OPEN, BreakerState.OPEN]
        await trio.sleep(1.0)
        second.default = Reply(text="second recovered")
        first.default = Reply(text="first recovered")
        result = await ask_pool(inbox, cid="bypass")
    assert isinstance(result, Completion)
    assert result.provider == "first"  # opened first, so least recently
    assert pool.statistics().provider("first").breaker.state is BreakerState.CLOSED
    assert pool.statistics().provider("second").breaker.state is BreakerState.OPEN


@pytest.mark.autojump
async def test_while_the_bypass_probe_is_out_other_requests_fail_fast() -> None:
    only = ScriptedAdapter("only", default=TRANSIENT)
    settings = pool_settings(provider_settings("only"), consecutive=1, open_s=100.0, max_attempts=1)
    async with running_pool([only], settings) as (_, inbox):
        await ask_pool(inbox)
        only.default = Hang()
        results: list[object] = []
        times: list[float] = []
        start = trio.current_time()

        async def one(i: int) -> None:
            results.append(await ask_pool(inbox, cid=f"c{i}", timeout_s=5.0))
            times.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
    assert all(isinstance(r, CompletionFailed) for r in results)
    assert len(only.calls) == 2  # the opening failure, then the single bypass probe
    assert sorted(times)[:3] == [0.0, 0.0, 0.0]


@pytest.mark.autojump
async def test_an_attempt_cut_short_by_the_turn_deadline_is_not_held_against_the_provider() -> None:
    primary = ScriptedAdapter("primary", default=Hang())
    settings = pool_settings(provider_settings("primary", timeout_s=20.0), consecutive=1)
    async with running_pool([primary], settings) as (pool, inbox):
        result = await ask_pool(inbox, timeout_s=3.0)
        assert isinstance(result, CompletionFailed)
        stats = pool.statistics().provider("primary")
    assert stats.breaker.state is BreakerState.CLOSED
    assert stats.attempts[Outcome.TRANSIENT] == 1


@pytest.mark.autojump
async def test_a_provider_timeout_counts_as_a_transient_failure() -> None:
    primary = ScriptedAdapter("primary", default=Hang())
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary", timeout_s=2.0), provider_settings("secondary"), consecutive=1
    )
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        await ask_pool(inbox, timeout_s=30.0)
        assert pool.statistics().provider("primary").breaker.state is BreakerState.OPEN


async def test_breaker_and_key_state_survive_a_restart_of_the_actor() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    primary.by_key["dead"] = Fail(outcome=Outcome.DEAD_KEY)
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary", keys=("dead", "k1")),
        provider_settings("secondary"),
        consecutive=1,
    )
    pool = ProviderPool(adapters=[primary, secondary], settings=settings)
    for _ in range(2):  # the supervisor runs the same pool object again
        send, receive = trio.open_memory_channel[CompletionRequest](4)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(pool.run, inbox=receive))
            with send:
                result = await ask_pool(send)
        assert isinstance(result, Completion)
        assert result.provider == "secondary"
    assert primary.keys_used == ["dead", "k1"]  # nothing more after the restart
