"""The SessionCache contract on memory and on a real Redis, plus token-bucket properties.

Redis tests use the shared server on 127.0.0.1:6379 (``CONCIERGE_TEST_REDIS_URL``)
under a key prefix unique to the run and the test, deleted afterwards.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import coredis
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from concierge.observability import Status
from concierge.protocol import Role, Turn
from concierge.store import Monitor, open_session_cache, run_monitor
from concierge.store.cache_memory import MemorySessionCache
from concierge.store.cache_redis import RedisSessionCache
from concierge.store.cache_rules import BUCKET_TTL_MARGIN_S, BucketState, refill_and_take
from tests.stores import store_settings
from tests.waiting import eventually

REDIS_URL = os.environ.get("CONCIERGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_PREFIX = f"concierge-test:{secrets.token_hex(4)}:"
EPSILON = 1e-9

Cache = MemorySessionCache | RedisSessionCache


def user(text: str) -> Turn:
    return Turn(role=Role.USER, text=text)


def bot(text: str) -> Turn:
    return Turn(role=Role.ASSISTANT, text=text)


def texts(turns: Sequence[Turn] | None) -> list[str] | None:
    return None if turns is None else [t.text for t in turns]


async def delete_prefix(prefix: str) -> None:
    async with coredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(keys)


async def redis_ttls(prefix: str) -> dict[str, float]:
    """Seconds left for every key under ``prefix`` (-1 = no TTL), prefix stripped."""
    async with coredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        return {key[len(prefix) :]: await admin.pttl(key) / 1000 for key in keys}


async def ttls(cache: Cache) -> dict[str, float]:
    if isinstance(cache, MemorySessionCache):
        return cache.remaining_ttls()
    return await redis_ttls(cache.key_prefix)


@pytest.fixture
async def redis_cache() -> AsyncIterator[RedisSessionCache]:
    prefix = f"{RUN_PREFIX}{secrets.token_hex(4)}:"
    try:
        async with RedisSessionCache.open(REDIS_URL, key_prefix=prefix, timeout_s=2.0) as cache:
            yield cache
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await delete_prefix(prefix)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemorySessionCache(max_entries=100)
        return
    prefix = f"{RUN_PREFIX}{secrets.token_hex(4)}:"
    try:
        async with RedisSessionCache.open(
            REDIS_URL, key_prefix=prefix, timeout_s=2.0
        ) as redis_cache:
            yield redis_cache
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await delete_prefix(prefix)


# -- context windows -----------------------------------------------------------------------
@pytest.mark.anyio
async def test_unknown_context_is_a_miss(cache: Cache) -> None:
    assert await cache.get_context("telegram:1") is None


@pytest.mark.anyio
async def test_set_context_round_trips_turns_in_order(cache: Cache) -> None:
    turns = [
        user("Bonjour, à quelle heure est la messe ?"),
        bot('Dimanche à 10 h.\n"Bienvenue" 🙏'),
        user(""),
        bot('["user", "not a turn"]'),
        user("assistant: a colon: or two"),
    ]
    await cache.set_context("telegram:1", turns, ttl_s=60)
    assert list(await cache.get_context("telegram:1") or ()) == turns


@pytest.mark.anyio
async def test_empty_window_is_cached_as_empty_not_missing(cache: Cache) -> None:
    await cache.set_context("telegram:1", [], ttl_s=60)
    assert await cache.get_context("telegram:1") == ()


@pytest.mark.anyio
async def test_set_context_replaces_the_previous_window(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("a"), bot("b"), user("c")], ttl_s=60)
    await cache.set_context("telegram:1", [user("d")], ttl_s=60)
    assert texts(await cache.get_context("telegram:1")) == ["d"]


@pytest.mark.anyio
async def test_append_grows_the_window_and_keeps_the_newest_turns(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("q1"), bot("a1")], ttl_s=60)
    await cache.append_context("telegram:1", [user("q2"), bot("a2")], max_turns=3, ttl_s=60)
    assert texts(await cache.get_context("telegram:1")) == ["a1", "q2", "a2"]
    await cache.append_context("telegram:1", [user("q3")], max_turns=10, ttl_s=60)
    assert texts(await cache.get_context("telegram:1")) == ["a1", "q2", "a2", "q3"]


@pytest.mark.anyio
async def test_append_to_an_empty_cached_window_starts_it(cache: Cache) -> None:
    await cache.set_context("telegram:1", [], ttl_s=60)
    await cache.append_context("telegram:1", [user("q"), bot("a")], max_turns=5, ttl_s=60)
    assert texts(await cache.get_context("telegram:1")) == ["q", "a"]


@pytest.mark.anyio
async def test_append_to_a_missing_window_leaves_it_missing(cache: Cache) -> None:
    await cache.append_context("telegram:1", [user("q"), bot("a")], max_turns=5, ttl_s=60)
    assert await cache.get_context("telegram:1") is None
    assert "context:telegram:1" not in await ttls(cache)


@pytest.mark.anyio
async def test_append_with_max_turns_zero_empties_the_window(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("q"), bot("a")], ttl_s=60)
    await cache.append_context("telegram:1", [user("q2")], max_turns=0, ttl_s=60)
    assert await cache.get_context("telegram:1") == ()


@pytest.mark.anyio
async def test_clear_context_forgets_only_that_window(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("one")], ttl_s=60)
    await cache.set_context("telegram:2", [user("two")], ttl_s=60)
    await cache.clear_context("telegram:1")
    await cache.clear_context("telegram:404")  # clearing nothing is fine
    assert await cache.get_context("telegram:1") is None
    assert texts(await cache.get_context("telegram:2")) == ["two"]


# -- dedupe ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_seen_is_false_the_first_time_and_true_after(cache: Cache) -> None:
    assert await cache.seen("telegram:42", ttl_s=60) is False
    assert await cache.seen("telegram:42", ttl_s=60) is True
    assert await cache.seen("telegram:43", ttl_s=60) is False


# -- token buckets (explicit ``now``) -------------------------------------------------------------
@pytest.mark.anyio
async def test_bucket_grants_the_burst_refuses_then_refills_at_the_rate(cache: Cache) -> None:
    async def take(now: float) -> bool:
        return await cache.take_token("user:1", rate_per_s=0.5, burst=3, now=now)

    assert [await take(1000.0) for _ in range(4)] == [True, True, True, False]
    assert await take(1001.0) is False  # half a token
    assert await take(1002.0) is True  # one whole token after 1 / rate seconds
    assert await take(1002.0) is False
    assert [await take(1_000_000.0) for _ in range(4)] == [True, True, True, False]  # capped


@pytest.mark.anyio
async def test_buckets_are_independent(cache: Cache) -> None:
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=5.0) is True
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=5.0) is False
    assert await cache.take_token("user:2", rate_per_s=1, burst=1, now=5.0) is True


@pytest.mark.anyio
async def test_a_clock_running_backwards_refills_nothing(cache: Cache) -> None:
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=500.0) is True
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=10.0) is False
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=10.5) is False
    assert await cache.take_token("user:1", rate_per_s=1, burst=1, now=11.0) is True


# -- TTLs --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_every_key_written_carries_a_ttl(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("q")], ttl_s=300)
    await cache.append_context("telegram:1", [bot("a")], max_turns=4, ttl_s=600)
    await cache.set_context("telegram:2", [], ttl_s=300)
    await cache.take_token("user:1", rate_per_s=0.1, burst=5, now=1.0)
    await cache.seen("waha:abc", ttl_s=120)
    left = await ttls(cache)
    limits = {
        "context:telegram:1": 600,
        "context:telegram:2": 300,
        "bucket:user:1": 5 / 0.1 + BUCKET_TTL_MARGIN_S,
        "seen:waha:abc": 120,
    }
    assert set(left) == set(limits)
    for key, limit in limits.items():
        assert 0 < left[key] <= limit, key
    assert left["context:telegram:1"] > 300  # the append refreshed the window's TTL


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda c: c.set_context("u", [], ttl_s=0), "ttl_s"),
        (lambda c: c.set_context("u", [], ttl_s=math.inf), "ttl_s"),
        (lambda c: c.append_context("u", [], max_turns=-1, ttl_s=1), "max_turns"),
        (lambda c: c.append_context("u", [], max_turns=2, ttl_s=-5), "ttl_s"),
        (lambda c: c.seen("k", ttl_s=-1), "ttl_s"),
        (lambda c: c.take_token("b", rate_per_s=0, burst=1, now=0.0), "rate_per_s"),
        (lambda c: c.take_token("b", rate_per_s=1, burst=0, now=0.0), "burst"),
        (lambda c: c.take_token("b", rate_per_s=1, burst=1, now=math.nan), "now"),
    ],
)
async def test_bad_arguments_are_refused_naming_the_argument(
    cache: Cache, call: Callable[[Cache], Awaitable[object]], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        await call(cache)
    assert await ttls(cache) == {}


@pytest.mark.anyio
async def test_ping_reports_a_latency(cache: Cache) -> None:
    latency = await cache.ping()
    assert 0 <= latency < 2.0


# -- memory specifics (MockClock) --------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.autojump
async def test_memory_window_expires_after_its_ttl() -> None:
    cache = MemorySessionCache()
    await cache.set_context("telegram:1", [user("q")], ttl_s=10)
    await trio.sleep(9)
    await cache.append_context("telegram:1", [bot("a")], max_turns=5, ttl_s=10)  # refreshes
    await trio.sleep(9)
    assert texts(await cache.get_context("telegram:1")) == ["q", "a"]
    await trio.sleep(1.01)
    assert await cache.get_context("telegram:1") is None


@pytest.mark.anyio
@pytest.mark.autojump
async def test_memory_seen_forgets_after_its_ttl() -> None:
    cache = MemorySessionCache()
    assert await cache.seen("k", ttl_s=5) is False
    await trio.sleep(4.9)
    assert await cache.seen("k", ttl_s=5) is True
    await trio.sleep(0.2)
    assert await cache.seen("k", ttl_s=5) is False


@pytest.mark.anyio
@pytest.mark.autojump
async def test_memory_bucket_refills_on_the_trio_clock() -> None:
    cache = MemorySessionCache()

    async def take() -> bool:
        return await cache.take_token("user:1", rate_per_s=1 / 12, burst=5, now=trio.current_time())

    assert [await take() for _ in range(6)] == [True] * 5 + [False]
    await trio.sleep(11.9)
    assert await take() is False
    await trio.sleep(0.2)
    assert await take() is True
    await trio.sleep(60 + BUCKET_TTL_MARGIN_S + 1)  # state expired: a full bucket again
    assert cache.statistics().buckets == 1
    assert [await take() for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.anyio
async def test_memory_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = MemorySessionCache(max_entries=3)
    for name in ("a", "b", "c"):
        await cache.set_context(name, [user(name)], ttl_s=60)
    await cache.get_context("a")  # "b" is now the least recently used
    await cache.set_context("d", [user("d")], ttl_s=60)
    assert await cache.get_context("b") is None
    assert [texts(await cache.get_context(n)) for n in ("a", "c", "d")] == [["a"], ["c"], ["d"]]
    for i in range(50):
        await cache.seen(f"flood:{i}", ttl_s=60)  # dedupe keys do not push windows out
    stats = cache.statistics()
    assert (stats.contexts, stats.seen, stats.evicted) == (3, 3, 1 + 47)


@pytest.mark.anyio
@pytest.mark.autojump
async def test_memory_ping_drops_expired_entries() -> None:
    cache = MemorySessionCache()
    await cache.set_context("a", [user("a")], ttl_s=1)
    await cache.seen("k", ttl_s=1)
    await cache.set_context("b", [user("b")], ttl_s=100)
    await trio.sleep(2)
    await cache.ping()
    assert set(cache.remaining_ttls()) == {"context:b"}


def test_memory_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemorySessionCache(max_entries=0)


# -- Redis specifics ----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_redis_keys_live_under_the_prefix(redis_cache: RedisSessionCache) -> None:
    await redis_cache.set_context("telegram:1", [user("q")], ttl_s=60)
    await redis_cache.seen("x", ttl_s=60)
    assert set(await redis_ttls(redis_cache.key_prefix)) == {"context:telegram:1", "seen:x"}
    assert redis_cache.key("context", "telegram:1") == f"{redis_cache.key_prefix}context:telegram:1"


@pytest.mark.anyio
async def test_redis_entries_expire_on_the_server(redis_cache: RedisSessionCache) -> None:
    await redis_cache.set_context("telegram:1", [user("q")], ttl_s=0.05)
    await redis_cache.seen("x", ttl_s=0.05)

    async def both_gone() -> bool:  # each key on its own clock: "x" was set a moment later
        return not await redis_ttls(redis_cache.key_prefix)

    await eventually(both_gone, "both keys to expire on the server", timeout_s=5)
    assert await redis_cache.get_context("telegram:1") is None
    assert await redis_cache.seen("x", ttl_s=60) is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    "items", [["not-a-header", "user:x"], ["window:v1", "no role"], ["window:v1", "robot:x"]]
)
async def test_redis_unreadable_window_is_a_miss_and_is_dropped(
    redis_cache: RedisSessionCache, items: list[str]
) -> None:
    key = redis_cache.key("context", "telegram:1")
    async with coredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
        await admin.rpush(key, items)
        await admin.expire(key, 60)
        assert await redis_cache.get_context("telegram:1") is None
        assert await admin.exists([key]) == 0


@pytest.mark.anyio
async def test_factory_opens_redis_when_a_url_is_set(tmp_path: Path) -> None:
    prefix = f"{RUN_PREFIX}{secrets.token_hex(4)}:"
    settings = store_settings(data_dir=tmp_path, redis_url=REDIS_URL)
    try:
        async with open_session_cache(settings, key_prefix=prefix) as cache:
            assert cache.backend == "redis"
            await cache.set_context("u", [user("q")], ttl_s=60)
            assert set(await redis_ttls(prefix)) == {"context:u"}
        async with open_session_cache(attrs.evolve(settings, redis_url=None)) as cache:
            assert cache.backend == "memory"
    finally:
        await delete_prefix(prefix)


# -- token bucket properties -------------------------------------------------------------------
def assert_within_allowance(grants: Sequence[float], *, rate_per_s: float, burst: int) -> None:
    """Over every window [t_i, t_j] of granted takes, at most ``burst + rate·(t_j − t_i)``."""
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            allowed = burst + rate_per_s * (grants[j] - start)
            assert j - i + 1 <= allowed + EPSILON, (i, j, grants[i : j + 1])


class TokenBucketMachine(RuleBasedStateMachine):
    """Random takes and clock advances against ``refill_and_take``, the rule both backends use."""

    def __init__(self) -> None:
        super().__init__()
        self.rate_per_s = 1.0
        self.burst = 1
        self.now = 1000.0
        self.state: BucketState | None = None
        self.grants: list[float] = []
        self.refused_at: float | None = None

    @initialize(
        rate_per_s=st.floats(min_value=0.001, max_value=100, allow_nan=False),
        burst=st.integers(min_value=1, max_value=20),
    )
    def configure(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst

    @rule(dt=st.one_of(st.just(0.0), st.floats(min_value=0, max_value=30, allow_nan=False)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def take(self) -> None:
        granted, self.state = refill_and_take(
            self.state, now=self.now, rate_per_s=self.rate_per_s, burst=self.burst
        )
        if self.refused_at is not None and self.now - self.refused_at >= 1 / self.rate_per_s + 1e-6:
            assert granted, "a whole token had refilled since the refusal"
        if granted:
            self.grants.append(self.now)
            self.refused_at = None
        elif self.refused_at is None:
            self.refused_at = self.now

    @invariant()
    def tokens_stay_between_zero_and_burst(self) -> None:
        if self.state is not None:
            assert 0 <= self.state.tokens <= self.burst

    @invariant()
    def grants_stay_within_the_allowance(self) -> None:
        assert_within_allowance(self.grants, rate_per_s=self.rate_per_s, burst=self.burst)


TokenBucketMachine.TestCase.settings = settings(
    max_examples=500, stateful_step_count=50, deadline=None
)
test_token_bucket_rule_properties = TokenBucketMachine.TestCase

bucket_runs = st.tuples(
    st.floats(min_value=0.01, max_value=50, allow_nan=False),
    st.integers(min_value=1, max_value=10),
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0, max_value=5, allow_nan=False)),
        min_size=1,
        max_size=60,
    ),
)


def replay_reference(rate_per_s: float, burst: int, steps: Sequence[float]) -> list[bool]:
    state, now, decisions = None, 1000.0, []
    for dt in steps:
        now += dt
        granted, state = refill_and_take(state, now=now, rate_per_s=rate_per_s, burst=burst)
        decisions.append(granted)
    return decisions


async def replay_cache(
    cache: Cache, rate_per_s: float, burst: int, steps: Sequence[float]
) -> tuple[list[bool], list[float]]:
    now, decisions, grants = 1000.0, [], []
    for dt in steps:
        now += dt
        granted = await cache.take_token("prop", rate_per_s=rate_per_s, burst=burst, now=now)
        decisions.append(granted)
        if granted:
            grants.append(now)
    return decisions, grants


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(run=bucket_runs)
@pytest.mark.anyio
async def test_memory_bucket_follows_the_rule_and_stays_within_allowance(
    run: tuple[float, int, list[float]],
) -> None:
    rate_per_s, burst, steps = run
    decisions, grants = await replay_cache(MemorySessionCache(), rate_per_s, burst, steps)
    assert decisions == replay_reference(rate_per_s, burst, steps)
    assert_within_allowance(grants, rate_per_s=rate_per_s, burst=burst)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(run=bucket_runs)
@pytest.mark.anyio
async def test_redis_bucket_script_takes_the_same_decisions_as_the_rule(
    run: tuple[float, int, list[float]],
) -> None:
    rate_per_s, burst, steps = run
    prefix = f"{RUN_PREFIX}{secrets.token_hex(4)}:"
    try:
        async with RedisSessionCache.open(REDIS_URL, key_prefix=prefix, timeout_s=2.0) as cache:
            decisions, grants = await replay_cache(cache, rate_per_s, burst, steps)
    finally:
        await delete_prefix(prefix)
    assert decisions == replay_reference(rate_per_s, burst, steps)
    assert_within_allowance(grants, rate_per_s=rate_per_s, burst=burst)


# -- monitor -------------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.autojump
async def test_monitor_passes_for_the_memory_cache() -> None:
    cache = MemorySessionCache()
    monitor = Monitor.of_cache(backend=cache.backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_monitor(
                ping=cache.ping, monitor=monitor, interval_s=10, task_status=task_status
            )
        )
        [check] = monitor.health_checks()
        assert (check.key, check.status, check.component_type) == (
            "memory:responseTime",
            Status.PASS,
            "datastore",
        )
        metrics = {m.name: m.samples[0] for m in monitor.metrics()}
        assert metrics["concierge_cache_up"].value == 1.0
        assert metrics["concierge_cache_up"].labels == {"backend": "memory"}
        nursery.cancel_scope.cancel()


def test_monitor_warns_on_a_slow_ping_and_never_fails() -> None:
    monitor = Monitor.of_cache(backend="redis", warn_latency_s=0.1)
    monitor.record_success(0.25)
    [check] = monitor.health_checks()
    assert (check.status, check.observed_value, check.output) == (
        Status.WARN,
        250.0,
        "slower than 100 ms",
    )
    monitor.record_failure("redis ping failed: connection refused")
    [check] = monitor.health_checks()
    assert (check.status, check.output) == (Status.WARN, "redis ping failed: connection refused")
    assert not monitor.available
    monitor.record_success(0.001)
    [check] = monitor.health_checks()
    assert check.status is Status.PASS
    assert monitor.available


@pytest.mark.anyio
async def test_every_operation_is_a_cancellation_point(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("Bonjour")], ttl_s=60)
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "get_context": lambda: cache.get_context("telegram:1"),
        "set_context": lambda: cache.set_context("telegram:1", [user("Salut")], ttl_s=60),
        "append_context": lambda: cache.append_context(
            "telegram:1", [bot("Oui")], max_turns=4, ttl_s=60
        ),
        "clear_context": lambda: cache.clear_context("telegram:1"),
        "take_token": lambda: cache.take_token("b", rate_per_s=1.0, burst=1, now=0.0),
        "seen": lambda: cache.seen("dedupe:1", ttl_s=60),
    }
    for name, operation in operations.items():
        with trio.CancelScope() as scope:
            scope.cancel()
            await operation()
        assert scope.cancelled_caught, f"{name} went on in a cancelled scope"
    if isinstance(cache, MemorySessionCache):
        # In process, a cancelled call changes nothing (Redis may have run the command).
        assert texts(await cache.get_context("telegram:1")) == ["Bonjour"]
        assert await cache.seen("dedupe:1", ttl_s=60) is False


@pytest.mark.anyio
async def test_forget_erases_every_entry_of_the_matching_names(cache: Cache) -> None:
    await cache.set_context("telegram:1", [user("secret question")], ttl_s=600)
    await cache.set_context("telegram:2", [user("kept")], ttl_s=600)
    assert await cache.take_token("user:telegram:1", rate_per_s=1, burst=1, now=100.0)
    assert await cache.take_token("user:telegram:2", rate_per_s=1, burst=1, now=100.0)
    assert await cache.seen("telegram:1", ttl_s=600) is False
    gone = await cache.forget(lambda name: name.removeprefix("user:") == "telegram:1")
    assert gone == 3
    assert await cache.get_context("telegram:1") is None
    assert await cache.take_token("user:telegram:1", rate_per_s=1, burst=1, now=100.0)
    assert await cache.seen("telegram:1", ttl_s=600) is False
    assert texts(await cache.get_context("telegram:2")) == ["kept"]
    assert not await cache.take_token("user:telegram:2", rate_per_s=1, burst=1, now=100.0)
