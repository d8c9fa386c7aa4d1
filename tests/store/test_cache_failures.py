"""The Redis session cache when Redis dies, restarts or stalls: a private redis-server per test.

Every call must end within its timeout with ``CacheUnavailable``, the monitor must
say ``warn`` (never ``fail``), and the same cache object must work again once
Redis is back, with every reply going to the call that asked for it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from concierge.observability import Status
from concierge.protocol import Role, Turn
from concierge.store import CacheUnavailable, Monitor, run_monitor
from concierge.store.cache_redis import RedisSessionCache
from tests.redisserver import PrivateRedis
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIMEOUT_S = 0.3
BOUND_S = TIMEOUT_S + 1.0  # generous: a failing call must not wait for anything else
MAX_CONNECTIONS = 2  # small, so a connection slot lost per outage would show at once


def user(text: str) -> Turn:
    return Turn(role=Role.USER, text=text)


@pytest.fixture
async def redis_server() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.aclose()


@pytest.fixture
async def cache(redis_server: PrivateRedis) -> AsyncIterator[RedisSessionCache]:
    async with RedisSessionCache.open(
        redis_server.url, key_prefix="t:", timeout_s=TIMEOUT_S, max_connections=MAX_CONNECTIONS
    ) as opened:
        yield opened


def every_operation(cache: RedisSessionCache) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "ping": cache.ping,
        "get_context": lambda: cache.get_context("u"),
        "set_context": lambda: cache.set_context("u", [user("q")], ttl_s=60),
        "append_context": lambda: cache.append_context("u", [user("q")], max_turns=4, ttl_s=60),
        "clear_context": lambda: cache.clear_context("u"),
        "take_token": lambda: cache.take_token("b", rate_per_s=1, burst=2, now=1.0),
        "seen": lambda: cache.seen("k", ttl_s=60),
    }


async def assert_unavailable(call: Callable[[], Awaitable[object]], name: str) -> CacheUnavailable:
    with trio.fail_after(BOUND_S), pytest.raises(CacheUnavailable) as caught:
        await call()
    assert name in str(caught.value)
    return caught.value


def answering(cache: RedisSessionCache) -> Callable[[], Awaitable[bool]]:
    """A condition: a ping succeeds (once a pause ends or after a restart)."""

    async def check() -> bool:
        try:
            await cache.ping()
        except CacheUnavailable:
            return False
        return True

    return check


async def test_every_call_fails_fast_with_cache_unavailable_when_redis_is_killed(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    await cache.set_context("u", [user("q")], ttl_s=60)
    await redis_server.kill()
    for name, call in every_operation(cache).items():
        await assert_unavailable(call, name)
    assert cache.statistics().failures == len(every_operation(cache))


async def test_same_cache_reconnects_after_each_restart(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    for round_ in range(MAX_CONNECTIONS + 2):
        await cache.set_context("u", [user(f"before {round_}")], ttl_s=60)
        await redis_server.kill()
        await assert_unavailable(lambda: cache.get_context("u"), "get_context")
        await redis_server.start()
        # The very next call works: no reopening, no retry loop.
        with trio.fail_after(BOUND_S):
            assert await cache.get_context("u") is None  # Redis keeps nothing on disk
            await cache.set_context("u", [user(f"after {round_}")], ttl_s=60)
            assert [t.text for t in await cache.get_context("u") or ()] == [f"after {round_}"]


async def test_calls_in_flight_when_redis_dies_fail_and_free_their_connections(
    redis_server: PrivateRedis,
) -> None:
    async with RedisSessionCache.open(
        redis_server.url, key_prefix="t:", timeout_s=5.0, max_connections=MAX_CONNECTIONS
    ) as slow_cache:
        for _ in range(MAX_CONNECTIONS + 2):
            await slow_cache.set_context("u", [user("q")], ttl_s=60)
            await redis_server.command("CLIENT", "PAUSE", 10_000)
            failures: list[CacheUnavailable] = []

            async def call(i: int, failures: list[CacheUnavailable] = failures) -> None:
                try:
                    await slow_cache.append_context(f"u{i}", [user("x")], max_turns=3, ttl_s=60)
                except CacheUnavailable as exc:
                    failures.append(exc)

            with trio.fail_after(
                3
            ):  # well inside the 5 s timeout: the loss is noticed, not waited out
                async with trio.open_nursery() as nursery:
                    for i in range(6):
                        nursery.start_soon(call, i)
                    # every call is parked on the paused Redis (or on a connection slot)
                    await trio.testing.wait_all_tasks_blocked()
                    assert slow_cache.statistics().in_flight == 6
                    await redis_server.kill()
            assert len(failures) == 6
            await redis_server.start()
            with trio.fail_after(BOUND_S):
                await slow_cache.set_context("u", [user("back")], ttl_s=60)
                assert [t.text for t in await slow_cache.get_context("u") or ()] == ["back"]


async def test_cache_opens_while_redis_is_down_and_works_once_it_starts() -> None:
    server = PrivateRedis()
    try:
        async with RedisSessionCache.open(
            server.url, key_prefix="t:", timeout_s=TIMEOUT_S
        ) as cache:
            await assert_unavailable(cache.ping, "ping")
            await server.start()
            with trio.fail_after(BOUND_S):
                assert await cache.seen("k", ttl_s=60) is False
    finally:
        with trio.CancelScope(shield=True):
            await server.aclose()


async def test_paused_redis_makes_calls_time_out_at_the_configured_bound(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    await cache.set_context("kept", [user("kept")], ttl_s=60)
    assert await redis_server.command("CLIENT", "PAUSE", 2000) == b"+OK"
    errors: dict[str, CacheUnavailable] = {}

    async def run(name: str, call: Callable[[], Awaitable[object]]) -> None:
        errors[name] = await assert_unavailable(call, name)

    async with trio.open_nursery() as nursery:
        for name, call in every_operation(cache).items():
            nursery.start_soon(run, name, call)
    assert set(errors) == set(every_operation(cache))
    for error in errors.values():
        assert f"took longer than {TIMEOUT_S:g} s" in str(error)
    assert cache.statistics().timeouts == len(errors)
    await eventually(answering(cache), "Redis to answer again", step_s=0.05)
    assert [t.text for t in await cache.get_context("kept") or ()] == ["kept"]


async def test_replies_reach_their_own_callers_after_timed_out_calls(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    for name in ("a", "b", "c"):
        await cache.set_context(name, [user(name)], ttl_s=60)
    await cache.take_token("other", rate_per_s=1, burst=1, now=1.0)  # loads the script
    await redis_server.command("CLIENT", "PAUSE", 2000)
    # Sent while paused, abandoned at the timeout: their replies arrive later.
    await assert_unavailable(lambda: cache.get_context("a"), "get_context")
    await assert_unavailable(
        lambda: cache.take_token("bucket", rate_per_s=1, burst=1, now=1.0), "take_token"
    )
    await assert_unavailable(lambda: cache.seen("k", ttl_s=60), "seen")
    await eventually(answering(cache), "Redis to answer again", step_s=0.05)
    assert [t.text for t in await cache.get_context("b") or ()] == ["b"]
    assert [t.text for t in await cache.get_context("c") or ()] == ["c"]
    assert await cache.seen("k", ttl_s=60) is True  # the abandoned SET NX ran once Redis resumed
    assert await cache.take_token("bucket", rate_per_s=1, burst=1, now=1.0) is False


async def test_random_cancellations_mid_command_leave_the_client_consistent(
    cache: RedisSessionCache,
) -> None:
    rng = random.Random(7)
    cancelled = 0
    for i in range(400):
        with trio.move_on_after(rng.uniform(0, 0.002)) as scope:
            if i % 2:
                await cache.set_context(f"u{i}", [user(f"t{i}")], ttl_s=60)
            else:
                await cache.seen(f"k{i}", ttl_s=60)
        cancelled += scope.cancelled_caught
        j = rng.randrange(i + 1)
        if j % 2:
            assert await cache.get_context(f"u{j}") in (None, (user(f"t{j}"),))
    assert cancelled > 0, "no call was cancelled: the test proved nothing"
    for j in range(1, 400, 2):
        assert await cache.get_context(f"u{j}") in (None, (user(f"t{j}"),))
        await cache.set_context(f"u{j}", [user(f"again {j}")], ttl_s=60)
        assert await cache.get_context(f"u{j}") == (user(f"again {j}"),)


async def test_monitor_warns_while_redis_is_down_and_passes_once_it_is_back(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    monitor = Monitor.of_cache(backend=cache.backend)
    [check] = monitor.health_checks()
    assert (check.key, check.status, check.output) == (
        "redis:responseTime",
        Status.WARN,
        "not checked yet",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_monitor(
                ping=cache.ping,
                monitor=monitor,
                interval_s=0.05,
                down_interval_s=0.05,
                task_status=task_status,
            )
        )
        [check] = monitor.health_checks()
        assert check.status is Status.PASS
        assert check.observed_unit == "ms"
        assert check.observed_value is not None
        assert check.observed_value >= 0

        await redis_server.kill()
        with trio.fail_after(5):
            await monitor.wait_unavailable()
        [check] = monitor.health_checks()
        assert check.status is Status.WARN
        assert check.output is not None
        assert "ping" in check.output
        up = {m.name: m.samples[0].value for m in monitor.metrics()}
        assert up["concierge_cache_up"] == 0.0
        assert up["concierge_cache_outages"] == 1.0

        await redis_server.start()
        with trio.fail_after(5):
            await monitor.wait_available()
        [check] = monitor.health_checks()
        assert check.status is Status.PASS
        nursery.cancel_scope.cancel()


async def test_monitor_warns_while_redis_is_paused(
    redis_server: PrivateRedis, cache: RedisSessionCache
) -> None:
    monitor = Monitor.of_cache(backend=cache.backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_monitor(
                ping=cache.ping,
                monitor=monitor,
                interval_s=0.05,
                down_interval_s=0.05,
                task_status=task_status,
            )
        )
        await redis_server.command("CLIENT", "PAUSE", 2000)
        with trio.fail_after(5):
            await monitor.wait_unavailable()
        [check] = monitor.health_checks()
        assert check.status is Status.WARN
        assert check.output is not None
        assert "took longer than" in check.output
        with trio.fail_after(10):
            await monitor.wait_available()
        nursery.cancel_scope.cancel()


async def test_callers_giving_up_while_a_connection_opens_do_not_starve_the_pool(
    redis_server: PrivateRedis,
) -> None:
    async with RedisSessionCache.open(
        redis_server.url, key_prefix="t:", timeout_s=TIMEOUT_S, max_connections=1
    ) as fresh:
        await redis_server.command("CLIENT", "PAUSE", 1500)  # the handshake now waits too
        for _ in range(3):
            await assert_unavailable(fresh.ping, "ping")
            with trio.move_on_after(0.01):
                await fresh.seen("k", ttl_s=60)
        await eventually(answering(fresh), "Redis to answer again", step_s=0.05)
        with trio.fail_after(BOUND_S):
            await fresh.set_context("u", [user("q")], ttl_s=60)
            assert await fresh.get_context("u") == (user("q"),)
        assert fresh.statistics().in_flight == 0


async def test_calls_beyond_the_in_flight_bound_fail_at_once(redis_server: PrivateRedis) -> None:
    async with RedisSessionCache.open(
        redis_server.url, key_prefix="t:", timeout_s=TIMEOUT_S, max_in_flight=2
    ) as bounded:
        await bounded.ping()
        await redis_server.command("CLIENT", "PAUSE", 1500)
        for _ in range(2):  # each leaves one abandoned call waiting for Redis
            await assert_unavailable(lambda: bounded.get_context("u"), "took longer than")
        assert bounded.statistics().in_flight == 2
        # Refused before it is sent: the message says so, not "took longer than".
        await assert_unavailable(lambda: bounded.get_context("u"), "2 calls already wait")
        await eventually(answering(bounded), "Redis to answer again", step_s=0.05)
        assert bounded.statistics().in_flight == 0
