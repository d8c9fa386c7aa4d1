"""The provider pool's turn loop with scripted adapters: rotation, failover, deadlines, attempts."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from actors import ProviderPool
from actors.provider_pool import ask
from concierge.protocol import (
    Completion,
    CompletionFailed,
    CompletionRequest,
    Outcome,
    ProviderCall,
)
from tests.providers.pool_helpers import TURNS, ask_pool, running_pool
from tests.providers.scripted import (
    Crash,
    Fail,
    Hang,
    Reply,
    ScriptedAdapter,
    pool_settings,
    provider_settings,
)

pytestmark = pytest.mark.anyio

TRANSIENT = Fail(outcome=Outcome.TRANSIENT, detail="529 overloaded_error")


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_keys_rotate_round_robin_within_a_provider() -> None:
    primary = ScriptedAdapter("primary")
    settings = pool_settings(provider_settings("primary", keys=("k1", "k2", "k3")))
    async with running_pool([primary], settings) as (_, inbox):
        for _ in range(6):
            assert isinstance(await ask_pool(inbox), Completion)
    assert primary.keys_used == ["k1", "k2", "k3", "k1", "k2", "k3"]


async def test_a_completion_says_who_answered() -> None:
    primary = ScriptedAdapter("primary", default=Reply(text="La messe est à 10 h 30."))
    settings = pool_settings(provider_settings("primary", keys=("main",)))
    async with running_pool([primary], settings) as (_, inbox):
        result = await ask_pool(inbox, cid="cid-who")
    assert isinstance(result, Completion)
    assert (result.text, result.provider, result.key_alias, result.attempts) == (
        "La messe est à 10 h 30.",
        "primary",
        "main",
        1,
    )
    assert result.correlation_id == "cid-who"
    call, _ = primary.calls[0]
    assert call.correlation_id == "cid-who"
    assert call.turns == TURNS
    assert call.max_tokens == 100


async def test_a_dead_key_is_never_used_again_and_logged_once() -> None:
    primary = ScriptedAdapter("primary")
    primary.by_key["k2"] = Fail(outcome=Outcome.DEAD_KEY, detail="401 authentication_error")
    settings = pool_settings(provider_settings("primary", keys=("k1", "k2", "k3")))
    with capture_logs() as logs:
        async with running_pool([primary], settings) as (_, inbox):
            results = [await ask_pool(inbox) for _ in range(6)]
    assert all(isinstance(r, Completion) for r in results)
    # the second turn hit k2, which failed, and went on to k3 in the same turn
    assert primary.keys_used == ["k1", "k2", "k3", "k1", "k3", "k1", "k3"]
    assert isinstance(results[1], Completion)
    assert results[1].attempts == 2
    disabled = events(logs, "provider.key_disabled")
    assert len(disabled) == 1
    assert disabled[0]["key"] == "k2"


@pytest.mark.autojump
async def test_a_throttled_key_is_skipped_until_its_hint_passes() -> None:
    primary = ScriptedAdapter("primary")
    primary.push(Fail(outcome=Outcome.THROTTLED, detail="429", retry_after_s=10.0))
    settings = pool_settings(provider_settings("primary", keys=("k1", "k2")))
    async with running_pool([primary], settings) as (_, inbox):
        first = await ask_pool(inbox)
        for _ in range(3):
            await ask_pool(inbox)
        await trio.sleep(10.0)
        await ask_pool(inbox)
        await ask_pool(inbox)
    assert isinstance(first, Completion)
    assert first.key_alias == "k2"
    assert primary.keys_used == ["k1", "k2", "k2", "k2", "k2", "k1", "k2"]


@pytest.mark.autojump
async def test_throttling_without_a_hint_backs_off_exponentially() -> None:
    primary = ScriptedAdapter("primary")
    settings = pool_settings(provider_settings("primary", keys=("k1",)))
    pool = ProviderPool(adapters=[primary], settings=settings)
    primary.push(Fail(outcome=Outcome.THROTTLED), Fail(outcome=Outcome.THROTTLED))
    for expected_max in (1.0, 2.0):
        before = trio.current_time()
        result = await pool.complete(
            ProviderCall(correlation_id="c", system="s", turns=TURNS, max_tokens=10, timeout_s=0.1)
        )
        assert isinstance(result, CompletionFailed)
        (key,) = pool.statistics().provider("primary").keys
        assert key.cooling_for_s is not None
        cooling_until = trio.current_time() + key.cooling_for_s
        assert expected_max / 2 <= cooling_until - before <= expected_max
        await trio.sleep_until(cooling_until)


async def test_a_transient_failure_fails_over_to_the_next_provider_in_the_same_turn() -> None:
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary", default=Reply(text="from secondary"))
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    with capture_logs() as logs:
        async with running_pool([primary, secondary], settings) as (_, inbox):
            result = await ask_pool(inbox, cid="cid-fo")
    assert isinstance(result, Completion)
    assert (result.provider, result.text, result.attempts) == ("secondary", "from secondary", 2)
    failover = events(logs, "provider.failover")
    assert len(failover) == 1
    assert failover[0]["from_provider"] == "primary"
    assert failover[0]["to_provider"] == "secondary"
    assert failover[0]["reason"] == "transient"
    assert failover[0]["correlation_id"] == "cid-fo"


async def test_an_adapter_crash_counts_as_transient() -> None:
    primary = ScriptedAdapter("primary", default=Crash(message="KeyError: 'content'"))
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.provider == "secondary"
    assert pool.statistics().provider("primary").attempts[Outcome.TRANSIENT] == 1


@pytest.mark.autojump
async def test_a_hanging_provider_is_abandoned_at_its_own_timeout() -> None:
    primary = ScriptedAdapter("primary", default=Hang())
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(
        provider_settings("primary", timeout_s=5.0), provider_settings("secondary")
    )
    async with running_pool([primary, secondary], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=30.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, Completion)
    assert result.provider == "secondary"
    assert 5.0 <= elapsed < 5.5
    assert primary.calls[0][0].timeout_s == 5.0


@pytest.mark.autojump
async def test_the_turn_deadline_holds_when_everything_hangs() -> None:
    adapters = [ScriptedAdapter(name, default=Hang()) for name in ("a", "b", "c")]
    settings = pool_settings(*(provider_settings(a.name, timeout_s=20.0) for a in adapters))
    async with running_pool(adapters, settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=8.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, CompletionFailed)
    assert "no provider answered within 8 s" in result.reason
    assert elapsed <= 8.0
    assert [len(a.calls) for a in adapters] == [1, 0, 0]
    assert adapters[0].calls[0][0].timeout_s == 8.0


@pytest.mark.autojump
async def test_each_attempt_gets_what_is_left_of_the_turn() -> None:
    adapters = [ScriptedAdapter(name, default=Hang()) for name in ("a", "b", "c")]
    settings = pool_settings(*(provider_settings(a.name, timeout_s=4.0) for a in adapters))
    async with running_pool(adapters, settings) as (_, inbox):
        result = await ask_pool(inbox, timeout_s=10.0)
    assert isinstance(result, CompletionFailed)
    assert [a.calls[0][0].timeout_s for a in adapters] == [4.0, 4.0, 2.0]


async def test_at_most_max_attempts_network_calls_per_turn() -> None:
    adapters = [ScriptedAdapter(f"p{i}", default=TRANSIENT) for i in range(5)]
    settings = pool_settings(
        *(provider_settings(a.name, keys=("k1", "k2")) for a in adapters), max_attempts=3
    )
    async with running_pool(adapters, settings) as (_, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, CompletionFailed)
    assert sum(len(a.calls) for a in adapters) == 3
    assert [f.provider for f in result.failures] == ["p0", "p1", "p2"]


async def test_a_single_provider_is_retried_with_its_next_key_after_a_transient_failure() -> None:
    primary = ScriptedAdapter("primary")
    primary.push(TRANSIENT)
    settings = pool_settings(provider_settings("primary", keys=("k1", "k2")))
    async with running_pool([primary], settings) as (_, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.key_alias == "k2"
    assert result.attempts == 2


@pytest.mark.autojump
async def test_a_retry_hint_longer_than_the_turn_fails_over_at_once() -> None:
    primary = ScriptedAdapter(
        "primary", default=Fail(outcome=Outcome.THROTTLED, retry_after_s=100.0)
    )
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    async with running_pool([primary, secondary], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=30.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, Completion)
    assert result.provider == "secondary"
    assert elapsed == 0.0


@pytest.mark.autojump
async def test_a_short_retry_hint_fails_over_rather_than_sleeping_when_another_provider_can_answer() -> (
    None
):
    primary = ScriptedAdapter("primary")
    primary.push(Fail(outcome=Outcome.THROTTLED, retry_after_s=2.0))
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    async with running_pool([primary, secondary], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox)
        assert trio.current_time() - start == 0.0
    assert isinstance(result, Completion)
    assert result.provider == "secondary"


@pytest.mark.autojump
async def test_with_nothing_else_eligible_a_hint_that_fits_is_slept_on() -> None:
    primary = ScriptedAdapter("primary")
    primary.push(Fail(outcome=Outcome.THROTTLED, retry_after_s=2.0))
    settings = pool_settings(provider_settings("primary"))
    async with running_pool([primary], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=30.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, Completion)
    assert result.attempts == 2
    assert elapsed == 2.0


@pytest.mark.autojump
async def test_with_nothing_else_eligible_a_hint_beyond_the_deadline_fails_at_once() -> None:
    primary = ScriptedAdapter("primary")
    primary.push(Fail(outcome=Outcome.THROTTLED, retry_after_s=60.0))
    settings = pool_settings(provider_settings("primary"))
    async with running_pool([primary], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=30.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, CompletionFailed)
    assert len(primary.calls) == 1
    assert elapsed == 0.0


async def test_a_request_error_is_not_retried_elsewhere() -> None:
    primary = ScriptedAdapter(
        "primary", default=Fail(outcome=Outcome.REQUEST_ERROR, detail="400 prompt is too long")
    )
    secondary = ScriptedAdapter("secondary")
    settings = pool_settings(provider_settings("primary"), provider_settings("secondary"))
    async with running_pool([primary, secondary], settings) as (pool, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, CompletionFailed)
    assert "refused by primary" in result.reason
    assert secondary.calls == []
    assert pool.statistics().provider("primary").breaker.window_failures == 0


async def test_the_offline_provider_answers_last_wherever_it_is_listed() -> None:
    offline = ScriptedAdapter(
        "offline", kind="offline", default=Reply(text="D'après nos informations…")
    )
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    secondary = ScriptedAdapter("secondary", default=TRANSIENT)
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), max_attempts=3
    )
    async with running_pool([offline, primary, secondary], settings) as (_, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.provider == "offline"
    assert result.attempts == 4
    assert (len(primary.calls), len(secondary.calls)) == (2, 1)


async def test_the_offline_provider_is_not_counted_against_max_attempts() -> None:
    offline = ScriptedAdapter("offline", kind="offline")
    primary = ScriptedAdapter("primary", default=TRANSIENT)
    settings = pool_settings(provider_settings("primary"), max_attempts=1)
    async with running_pool([primary, offline], settings) as (_, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.provider == "offline"
    assert len(primary.calls) == 1


async def test_the_offline_provider_answers_after_a_request_error() -> None:
    offline = ScriptedAdapter("offline", kind="offline")
    primary = ScriptedAdapter(
        "primary", default=Fail(outcome=Outcome.REQUEST_ERROR, detail="blocked")
    )
    settings = pool_settings(provider_settings("primary"))
    async with running_pool([primary, offline], settings) as (_, inbox):
        result = await ask_pool(inbox)
    assert isinstance(result, Completion)
    assert result.provider == "offline"


@pytest.mark.autojump
async def test_the_offline_provider_still_answers_when_every_network_provider_hangs() -> None:
    offline = ScriptedAdapter("offline", kind="offline")
    primary = ScriptedAdapter("primary", default=Hang())
    settings = pool_settings(provider_settings("primary", timeout_s=20.0))
    async with running_pool([primary, offline], settings) as (_, inbox):
        start = trio.current_time()
        result = await ask_pool(inbox, timeout_s=10.0)
        elapsed = trio.current_time() - start
    assert isinstance(result, Completion)
    assert result.provider == "offline"
    assert elapsed <= 10.0


@pytest.mark.autojump
async def test_requests_are_served_concurrently() -> None:
    primary = ScriptedAdapter("primary", default=Reply(delay_s=1.0))
    settings = pool_settings(provider_settings("primary", keys=("k1", "k2")))
    results: list[object] = []
    async with running_pool([primary], settings) as (_, inbox):
        start = trio.current_time()

        async def one(i: int) -> None:
            results.append(await ask_pool(inbox, cid=f"c{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        elapsed = trio.current_time() - start
    assert len(results) == 50
    assert all(isinstance(r, Completion) for r in results)
    assert primary.max_in_flight == 50
    assert elapsed == 1.0


@pytest.mark.autojump
async def test_a_pool_that_stops_mid_turn_gives_the_caller_a_failure_at_once() -> None:
    primary = ScriptedAdapter("primary", default=Hang())
    settings = pool_settings(provider_settings("primary", timeout_s=20.0))
    pool = ProviderPool(adapters=[primary], settings=settings)
    send, receive = trio.open_memory_channel[CompletionRequest](4)
    result: list[object] = []

    async def caller() -> None:
        result.append(
            await ask(
                send,
                ProviderCall(
                    correlation_id="c", system="s", turns=TURNS, max_tokens=10, timeout_s=30.0
                ),
            )
        )

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as pool_nursery:
            await pool_nursery.start(
                lambda task_status: pool.run(inbox=receive, task_status=task_status)
            )
            outer.start_soon(caller)
            await trio.sleep(1.0)
            pool_nursery.cancel_scope.cancel()
        stopped_at = trio.current_time()
    assert isinstance(result[0], CompletionFailed)
    assert "stopped before answering" in result[0].reason
    assert stopped_at == 1.0


async def test_asking_a_pool_that_is_not_running_fails_cleanly() -> None:
    send, receive = trio.open_memory_channel[CompletionRequest](1)
    receive.close()
    result = await ask(
        send,
        ProviderCall(correlation_id="c", system="s", turns=TURNS, max_tokens=10, timeout_s=5.0),
    )
    assert isinstance(result, CompletionFailed)
    assert "not running" in result.reason


@pytest.mark.autojump
async def test_asking_a_pool_that_never_answers_times_out() -> None:
    send, receive = trio.open_memory_channel[CompletionRequest](1)
    with receive:
        result = await ask(
            send,
            ProviderCall(correlation_id="c", system="s", turns=TURNS, max_tokens=10, timeout_s=5.0),
            margin_s=1.0,
        )
    assert isinstance(result, CompletionFailed)
    assert "within 6 s" in result.reason


def test_an_adapter_without_settings_is_refused() -> None:
    with pytest.raises(ValueError, match="'ghost' has an adapter but no settings"):
        ProviderPool(
            adapters=[ScriptedAdapter("ghost")],
            settings=pool_settings(provider_settings("primary")),
        )


def test_a_pool_without_adapters_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one adapter"):
        ProviderPool(adapters=[], settings=pool_settings())
