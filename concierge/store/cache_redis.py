"""The Redis session cache: coredis on trio, every key with a TTL, every call bounded.

coredis is used because it runs natively on trio and matches every reply to its
command. Two things it gets wrong are kept away from it (both seen in coredis 6.9):
a call cancelled while its pooled connection is being opened, and a connection that
dies while a MULTI/EXEC holds it, each lose a pool slot for good, until every call
hangs. So each operation is one command (multi-step writes are small Lua scripts:
atomic, one round trip), and it runs in the cache's own task: the caller stops
waiting at ``timeout_s`` while coredis finishes or fails on its own, longer timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import attrs
import coredis
import coredis.exceptions
import structlog
import trio
from coredis.retry import NoRetryPolicy

from concierge.protocol import Role, Turn
from concierge.store.cache_rules import bucket_ttl_s, check_bucket, check_max_turns, check_ttl
from concierge.store.errors import CacheUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_KEY_PREFIX = "concierge:"
DEFAULT_MAX_IN_FLIGHT = 1000
# coredis gives up on a connect or reply after this long (or 10 × the call timeout).
ABANDON_AFTER_S = 5.0
# First element of every context list: an empty window is still a cached window.
WINDOW_HEADER = "window:v1"

# KEYS[1] window; ARGV ttl_ms, header, turns...
_SET_CONTEXT = """
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[1], ARGV[2])
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] window; ARGV ttl_ms, max_turns, header, turns...
# Appends only to a window that exists: a lost window is rebuilt whole, never partly.
_APPEND_CONTEXT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 4, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local keep = tonumber(ARGV[2]) + 1
if redis.call('LLEN', KEYS[1]) > keep then
  redis.call('LTRIM', KEYS[1], -keep, -1)
  redis.call('LSET', KEYS[1], 0, ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] bucket; ARGV rate_per_s, burst, now, ttl_ms. Same rule as refill_and_take.
_TAKE_TOKEN = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
else
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(burst, tokens + elapsed * rate)
end
local granted = 0
if tokens >= 1 then
  tokens = tokens - 1
  granted = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return granted
"""

_REDIS_ERRORS: tuple[type[Exception], ...] = (
    coredis.exceptions.RedisError,
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _encode(turn: Turn) -> str:
    """``user:text`` / ``assistant:text``: cheaper to read back than JSON, as unambiguous."""
    return f"{turn.role.value}:{turn.text}"


def _decode(item: str) -> Turn:
    role, sep, text = item.partition(":")
    if not sep:
        raise ValueError("turn without a role")
    return Turn(role=Role(role), text=text)


class _Result(Generic[T]):
    """What a call run in the cache's task came back with."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.value: T | None = None
        self.error: Exception | None = None


@attrs.frozen(kw_only=True)
class RedisCacheStatistics:
    calls: int
    failures: int
    timeouts: int
    in_flight: int


class RedisSessionCache:
    """``SessionCache`` on Redis. Keys: ``{prefix}context:``, ``bucket:``, ``seen:`` + name.

    Every call is bounded by ``timeout_s``; a timeout or any Redis error raises
    ``CacheUnavailable``. The client reconnects by itself once Redis is back.
    Open it with ``RedisSessionCache.open``.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        nursery: trio.Nursery,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be above 0, got {timeout_s!r}")
        self._client = client
        self._nursery = nursery
        self._prefix = key_prefix
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._set_context = client.register_script(_SET_CONTEXT)
        self._append_context = client.register_script(_APPEND_CONTEXT)
        self._take_token = client.register_script(_TAKE_TOKEN)
        self._calls = 0
        self._failures = 0
        self._timeouts = 0
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float = 0.5,
        max_connections: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> AsyncIterator[RedisSessionCache]:
        """Connect lazily: the cache opens even while Redis is down (calls then raise).

        coredis's own timeouts (``abandon_after_s``) end the calls callers gave up on.
        """
        abandon_after_s = max(ABANDON_AFTER_S, 10 * timeout_s)
        client: coredis.Redis[str] = coredis.Redis.from_url(
            url,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),  # a retried SET NX would report a new key as seen
            connect_timeout=abandon_after_s,
            stream_timeout=abandon_after_s,
            max_connections=max_connections,
        )
        async with client, trio.open_nursery() as nursery:
            cache = cls(
                client,
                nursery=nursery,
                key_prefix=key_prefix,
                timeout_s=timeout_s,
                max_in_flight=max_in_flight,
            )
            try:
                yield cache
            finally:
                cache._closed = True
                nursery.cancel_scope.cancel()

    @property
    def backend(self) -> str:
        return "redis"

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def key(self, kind: str, name: str) -> str:
        """The Redis key of a ``context``, ``bucket`` or ``seen`` entry."""
        return f"{self._prefix}{kind}:{name}"

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` in the cache's task; wait for it ``timeout_s`` at most."""
        if self._closed:
            raise CacheUnavailable(f"redis {operation}: the cache is closed")
        self._calls += 1
        if self._in_flight >= self._max_in_flight:
            self._failures += 1
            raise CacheUnavailable(
                f"redis {operation}: {self._in_flight} calls already wait for Redis"
            )
        result = _Result[T]()
        self._in_flight += 1
        self._nursery.start_soon(self._run, call, result)
        with trio.move_on_after(self._timeout_s):
            await result.done.wait()
        if not result.done.is_set():
            self._failures += 1
            self._timeouts += 1
            log.debug("cache.call_timed_out", operation=operation, timeout_s=self._timeout_s)
            raise CacheUnavailable(f"redis {operation} took longer than {self._timeout_s:g} s")
        if result.error is not None:
            if not isinstance(result.error, _REDIS_ERRORS):
                raise result.error  # a bug, not an outage
            self._failures += 1
            log.debug("cache.call_failed", operation=operation, error=repr(result.error))
            raise CacheUnavailable(f"redis {operation} failed: {result.error}") from result.error
        if not result.ok:
            raise CacheUnavailable(f"redis {operation}: the cache closed")
        return result.value  # type: ignore[return-value]

    async def _run(self, call: Callable[[], Awaitable[T]], result: _Result[T]) -> None:
        try:
            result.value = await call()
            result.ok = True
        except Exception as exc:  # handed to the caller, who decides
            result.error = exc
        finally:
            self._in_flight -= 1
            result.done.set()

    async def ping(self) -> float:
        started = trio.current_time()

        async def call() -> Any:
            return await self._client.ping()

        await self._call("ping", call)
        return trio.current_time() - started

    async def get_context(self, user_key: str) -> Sequence[Turn] | None:
        key = self.key("context", user_key)

        async def call() -> list[str]:
            return await self._client.lrange(key, 0, -1)

        items = await self._call("get_context", call)
        if not items:
            return None
        try:
            if items[0] != WINDOW_HEADER:
                raise ValueError("missing window header")
            return tuple(_decode(item) for item in items[1:])
        except (ValueError, TypeError) as exc:
            log.warning("cache.context_discarded", key=key, error=str(exc))
            await self.clear_context(user_key)
            return None

    async def set_context(self, user_key: str, turns: Sequence[Turn], *, ttl_s: float) -> None:
        args: list[str | int] = [_ms(check_ttl(ttl_s)), WINDOW_HEADER, *(_encode(t) for t in turns)]
        key = self.key("context", user_key)

        async def call() -> Any:
            return await self._set_context(keys=[key], args=args)

        await self._call("set_context", call)

    async def append_context(
        self, user_key: str, turns: Sequence[Turn], *, max_turns: int, ttl_s: float
    ) -> None:
        """Append to a cached window only: a missing one stays missing (rebuilt on read)."""
        args: list[str | int] = [
            _ms(check_ttl(ttl_s)),
            check_max_turns(max_turns),
            WINDOW_HEADER,
            *(_encode(t) for t in turns),
        ]
        key = self.key("context", user_key)

        async def call() -> Any:
            return await self._append_context(keys=[key], args=args)

        await self._call("append_context", call)

    async def clear_context(self, user_key: str) -> None:
        key = self.key("context", user_key)

        async def call() -> int:
            return await self._client.delete([key])

        await self._call("clear_context", call)

    async def take_token(self, bucket: str, *, rate_per_s: float, burst: int, now: float) -> bool:
        check_bucket(rate_per_s, burst, now)
        key = self.key("bucket", bucket)
        args: list[str | int] = [
            repr(float(rate_per_s)),
            burst,
            repr(float(now)),
            _ms(bucket_ttl_s(rate_per_s, burst)),
        ]

        async def call() -> Any:
            return await self._take_token(keys=[key], args=args)

        return bool(await self._call("take_token", call))

    async def seen(self, key: str, *, ttl_s: float) -> bool:
        px = _ms(check_ttl(ttl_s))
        redis_key = self.key("seen", key)

        async def call() -> bool:
            return await self._client.set(redis_key, "1", condition=coredis.PureToken.NX, px=px)

        created = await self._call("seen", call)
        return not created

    async def forget(self, matches: Callable[[str], bool]) -> int:
        """Walk this prefix's keys with ``SCAN`` (never ``KEYS``: it blocks Redis) and delete matches."""
        kinds = tuple(f"{self._prefix}{kind}:" for kind in ("context", "bucket", "seen"))

        async def call() -> int:
            doomed: list[str] = []
            async for name in self._client.scan_iter(match=f"{self._prefix}*", count=1000):
                for kind in kinds:
                    if name.startswith(kind) and matches(name.removeprefix(kind)):
                        doomed.append(name)
            deleted = 0
            for start in range(0, len(doomed), 500):
                deleted += await self._client.delete(doomed[start : start + 500])
            return deleted

        return await self._call("forget", call)

    def statistics(self) -> RedisCacheStatistics:
        return RedisCacheStatistics(
            calls=self._calls,
            failures=self._failures,
            timeouts=self._timeouts,
            in_flight=self._in_flight,
        )

    async def aclose(self) -> None:
        """Refuse further calls; the connections close when ``open``'s block ends."""
        await trio.lowlevel.checkpoint()
        self._closed = True
