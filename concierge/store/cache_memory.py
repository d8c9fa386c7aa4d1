"""The in-process session cache, used when no Redis is configured.

Every entry expires on ``trio.current_time()`` (so tests drive it with MockClock) and
each of the three maps is bounded, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import attrs
import trio

from concierge.protocol import Turn
from concierge.store.cache_rules import (
    BucketState,
    bucket_ttl_s,
    check_bucket,
    check_max_turns,
    check_ttl,
    refill_and_take,
)

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 10_000


# -- a bounded map with expiry -----------------------------------------------------------
class TtlMap(Generic[V]):
    """At most ``max_entries`` values, each with a deadline; the least recently used go first."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        deadline, value = item
        if deadline <= self._clock():
            del self._items[key]
            self.expired += 1
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, ttl_s: float) -> None:
        self._items[key] = (self._clock() + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
            self.evicted += 1

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def purge(self) -> int:
        """Drop every expired entry; return how many went."""
        now = self._clock()
        dead = [key for key, (deadline, _) in self._items.items() if deadline <= now]
        for key in dead:
            del self._items[key]
        self.expired += len(dead)
        return len(dead)

    def drop_where(self, matches: Callable[[str], bool]) -> int:
        """Drop every entry whose key ``matches``; return how many went."""
        gone = [key for key in self._items if matches(key)]
        for key in gone:
            del self._items[key]
        return len(gone)

    def deadlines(self) -> Iterator[tuple[str, float]]:
        for key, (deadline, _) in self._items.items():
            yield key, deadline

    def clear(self) -> None:
        self._items.clear()


@attrs.frozen(kw_only=True)
class MemoryCacheStatistics:
    contexts: int
    buckets: int
    seen: int
    evicted: int
    expired: int


class MemorySessionCache:
    """``SessionCache`` in process memory: nothing survives a restart, nothing grows unbounded.

    ``max_entries`` bounds each of the context, bucket and dedupe maps on its own, so
    a flood of dedupe keys cannot push context windows out.

    Operations are cancellation points but not schedule points: nothing here waits, and
    a turn makes four of them, so yielding to the scheduler each time was a measurable
    share of a turn under a burst.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._clock = clock
        self._contexts: TtlMap[tuple[Turn, ...]] = TtlMap(max_entries=max_entries, clock=clock)
        self._buckets: TtlMap[BucketState] = TtlMap(max_entries=max_entries, clock=clock)
        self._seen: TtlMap[bool] = TtlMap(max_entries=max_entries, clock=clock)

    @property
    def backend(self) -> str:
        return "memory"

    def _maps(self) -> tuple[TtlMap[tuple[Turn, ...]], TtlMap[BucketState], TtlMap[bool]]:
        return self._contexts, self._buckets, self._seen

    async def ping(self) -> float:
        """Also drops expired entries, so idle keys do not wait for eviction to leave."""
        started = trio.current_time()
        await trio.lowlevel.checkpoint()
        for ttl_map in self._maps():
            ttl_map.purge()
        return trio.current_time() - started

    async def get_context(self, user_key: str) -> Sequence[Turn] | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        return self._contexts.get(user_key)

    async def set_context(self, user_key: str, turns: Sequence[Turn], *, ttl_s: float) -> None:
        ttl_s = check_ttl(ttl_s)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._contexts.put(user_key, tuple(turns), ttl_s=ttl_s)

    async def append_context(
        self, user_key: str, turns: Sequence[Turn], *, max_turns: int, ttl_s: float
    ) -> None:
        ttl_s = check_ttl(ttl_s)
        max_turns = check_max_turns(max_turns)
        await trio.lowlevel.checkpoint_if_cancelled()
        window = self._contexts.get(user_key)
        if window is None:
            return  # no window: the next read rebuilds it whole from the durable store
        window = (*window, *turns)
        self._contexts.put(user_key, window[-max_turns:] if max_turns else (), ttl_s=ttl_s)

    async def clear_context(self, user_key: str) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._contexts.pop(user_key)

    async def take_token(self, bucket: str, *, rate_per_s: float, burst: int, now: float) -> bool:
        check_bucket(rate_per_s, burst, now)
        await trio.lowlevel.checkpoint_if_cancelled()
        granted, state = refill_and_take(
            self._buckets.get(bucket), now=now, rate_per_s=rate_per_s, burst=burst
        )
        self._buckets.put(bucket, state, ttl_s=bucket_ttl_s(rate_per_s, burst))
        return granted

    async def seen(self, key: str, *, ttl_s: float) -> bool:
        ttl_s = check_ttl(ttl_s)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._seen.get(key) is not None:
            return True
        self._seen.put(key, True, ttl_s=ttl_s)
        return False

    async def forget(self, matches: Callable[[str], bool]) -> int:
        await trio.lowlevel.checkpoint()
        return sum(ttl_map.drop_where(matches) for ttl_map in self._maps())

    def remaining_ttls(self) -> dict[str, float]:
        """Seconds left for every entry, keyed ``context:``/``bucket:``/``seen:`` + name."""
        now = self._clock()
        deadlines = {
            "context": self._contexts.deadlines(),
            "bucket": self._buckets.deadlines(),
            "seen": self._seen.deadlines(),
        }
        return {
            f"{kind}:{key}": deadline - now
            for kind, entries in deadlines.items()
            for key, deadline in entries
        }

    def statistics(self) -> MemoryCacheStatistics:
        maps = self._maps()
        return MemoryCacheStatistics(
            contexts=len(self._contexts),
            buckets=len(self._buckets),
            seen=len(self._seen),
            evicted=sum(m.evicted for m in maps),
            expired=sum(m.expired for m in maps),
        )

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        for ttl_map in self._maps():
            ttl_map.clear()
