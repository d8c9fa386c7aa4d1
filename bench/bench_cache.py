"""Session cache reads and writes per second (get_context / append_context), memory and Redis.

Prints a table, asserts nothing. Each operation runs ``--n`` times sequentially, then
spread over ``--tasks`` concurrent trio tasks. A plain coredis LRANGE row shows what
the cache's own layer (its task per call, the timeout, decoding) costs on top.

    python bench/bench_cache.py
    python bench/bench_cache.py --n 5000 --tasks 50 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import coredis
import trio

from concierge.protocol import Role, Turn
from concierge.store.cache_memory import MemorySessionCache
from concierge.store.cache_redis import RedisSessionCache

REDIS_URL = os.environ.get("CONCIERGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
USERS = 200
TURNS = [
    Turn(role=Role.USER, text="Bonjour, à quelle heure est la messe dimanche ?"),
    Turn(role=Role.ASSISTANT, text="La messe dominicale est à 10 h 30, à l'église Saint-Pierre."),
]

Op = Callable[[int], Awaitable[object]]


async def measure(op: Op, *, n: int, tasks: int) -> tuple[float, float, float]:
    """Run ``op(i)`` for i < n over ``tasks`` tasks; ops/s, p50 and p99 latency in ms."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return n / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


async def bench_cache(
    name: str, cache: MemorySessionCache | RedisSessionCache, *, n: int, tasks: int
) -> list[tuple[str, str, str, float, float, float]]:
    for u in range(USERS):
        await cache.set_context(f"user:{u}", TURNS, ttl_s=3600)

    async def get(i: int) -> object:
        return await cache.get_context(f"user:{i % USERS}")

    async def append(i: int) -> object:
        await cache.append_context(f"user:{i % USERS}", TURNS, max_turns=12, ttl_s=3600)
        return None

    rows = []
    for op_name, op in (("append_context", append), ("get_context", get)):
        for mode, count in (("sequential", 1), (f"{tasks} tasks", tasks)):
            rows.append((name, op_name, mode, *await measure(op, n=n, tasks=count)))
    return rows


async def bench_raw_coredis(
    url: str, prefix: str, *, n: int, tasks: int
) -> list[tuple[str, str, str, float, float, float]]:
    async with coredis.Redis.from_url(url, decode_responses=True) as client:

        async def lrange(i: int) -> object:
            return await client.lrange(f"{prefix}context:user:{i % USERS}", 0, -1)

        rows = []
        for mode, count in (("sequential", 1), (f"{tasks} tasks", tasks)):
            rows.append(
                ("coredis (reference)", "LRANGE", mode, *await measure(lrange, n=n, tasks=count))
            )
        return rows


async def main(args: argparse.Namespace) -> None:
    rows = await bench_cache("memory", MemorySessionCache(), n=args.n, tasks=args.tasks)
    if not args.skip_redis:
        prefix = f"concierge-bench:{secrets.token_hex(4)}:"
        try:
            async with RedisSessionCache.open(
                args.redis_url, key_prefix=prefix, timeout_s=2.0
            ) as cache:
                rows += await bench_cache("redis", cache, n=args.n, tasks=args.tasks)
            rows += await bench_raw_coredis(args.redis_url, prefix, n=args.n, tasks=args.tasks)
        finally:
            async with coredis.Redis.from_url(args.redis_url, decode_responses=True) as admin:
                keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
                if keys:
                    await admin.delete(keys)
    print(
        f"{'backend':<20} {'operation':<15} {'mode':<11} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for backend, op_name, mode, rate, p50, p99 in rows:
        print(f"{backend:<20} {op_name:<15} {mode:<11} {rate:>10,.0f} {p50:>8.3f} {p99:>8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="operations per measurement")
    parser.add_argument("--tasks", type=int, default=50, help="concurrent tasks")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--skip-redis", action="store_true")
    trio.run(main, parser.parse_args())
