"""What the provider pool adds to a call: latency per call and throughput, pool vs direct.

Three measurements, each printed as a table (no asserts):

1. the pool alone, with an in-process adapter that answers at once: the cost of
   ``ask`` (request message, one task per turn, key and breaker bookkeeping,
   reply channel);
2. the same Anthropic SDK adapter against the same loopback fake, called directly
   and through the pool, interleaved call by call so both see the same machine;
3. throughput with many concurrent callers, direct and through the pool.

Run: ``python bench/bench_pool.py [--calls 1000] [--concurrency 200]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import ProviderPool
from actors.provider_pool import ask
from concierge.protocol import CompletionRequest, ProviderCall, ProviderReply, Role, Turn
from concierge.providers import Adapter
from concierge.providers.anthropic import AnthropicAdapter
from concierge.settings import ApiKey, BreakerSettings, PoolSettings, ProviderSettings
from tests.fakes.anthropic_api import FakeAnthropic

KEY = ApiKey(alias="main", secret="sk-bench-main")
TURNS = (Turn(role=Role.USER, text="À quelle heure est la messe dimanche ?"),)
CALL = ProviderCall(
    correlation_id="bench", system="Tu es l'accueil.", turns=TURNS, max_tokens=100, timeout_s=30.0
)


class InstantAdapter:
    """Answers at once: what is left of a pool call is the pool's own cost."""

    name = "instant"
    kind = "anthropic"
    model = "instant"

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        await trio.lowlevel.checkpoint()
        return ProviderReply(text="ok", model=self.model)

    async def aclose(self) -> None:
        return None


def settings_for(
    name: str, base_url: str | None, keys: tuple[ApiKey, ...] = (KEY,)
) -> PoolSettings:
    return PoolSettings(
        providers=(
            ProviderSettings(
                name=name,
                kind="anthropic",
                model="claude-bench",
                base_url=base_url,
                keys=keys,
                timeout_s=30.0,
            ),
        ),
        turn_timeout_s=30.0,
        attempt_timeout_s=30.0,
        max_attempts=3,
        max_tokens=100,
        breaker=BreakerSettings(
            window=20, min_calls=5, failure_rate=0.5, consecutive=5, open_s=30.0, open_max_s=300.0
        ),
        credit_poll_s=300.0,
    )


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def via_pool(inbox: trio.MemorySendChannel[CompletionRequest]) -> None:
    await ask(inbox, CALL)


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def with_pool(
    adapter: Adapter,
    settings: PoolSettings,
    body: Callable[[trio.MemorySendChannel[CompletionRequest]], Awaitable[None]],
) -> None:
    pool = ProviderPool(adapters=[adapter], settings=settings)
    send, receive = trio.open_memory_channel[CompletionRequest](256)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(pool.run, inbox=receive))
        with send:
            await body(send)


async def bench_instant(calls: int) -> list[str]:
    lat: list[float] = []

    async def body(inbox: trio.MemorySendChannel[CompletionRequest]) -> None:
        for _ in range(100):
            await via_pool(inbox)
        for _ in range(calls):
            lat.append(await timed(partial(via_pool, inbox)))

    await with_pool(InstantAdapter(), settings_for("instant", None), body)
    return [
        f"| pool alone (instant adapter) | {calls} | {ms(lat, 0.5):.3f} | {ms(lat, 0.99):.3f} | "
        f"{statistics.mean(lat) * 1000:.3f} |"
    ]


async def bench_added(calls: int) -> list[str]:
    direct: list[float] = []
    pooled: list[float] = []
    async with FakeAnthropic.serve() as fake:
        settings = settings_for("anthropic", fake.url)
        adapter = AnthropicAdapter(settings.providers[0])
        try:

            async def body(inbox: trio.MemorySendChannel[CompletionRequest]) -> None:
                for _ in range(50):  # warm the connection pool and the SDK
                    await adapter.complete(CALL, KEY)
                    await via_pool(inbox)
                for _ in range(calls):
                    direct.append(await timed(partial(adapter.complete, CALL, KEY)))
                    pooled.append(await timed(partial(via_pool, inbox)))

            await with_pool(adapter, settings, body)
        finally:
            await adapter.aclose()
    rows = [
        f"| direct SDK call (fake Anthropic) | {calls} | {ms(direct, 0.5):.3f} | {ms(direct, 0.99):.3f} | "
        f"{statistics.mean(direct) * 1000:.3f} |",
        f"| same call through the pool | {calls} | {ms(pooled, 0.5):.3f} | {ms(pooled, 0.99):.3f} | "
        f"{statistics.mean(pooled) * 1000:.3f} |",
        f"| added by the pool (difference) | | {ms(pooled, 0.5) - ms(direct, 0.5):+.3f} | "
        f"{ms(pooled, 0.99) - ms(direct, 0.99):+.3f} | {(statistics.mean(pooled) - statistics.mean(direct)) * 1000:+.3f} |",
    ]
    return rows


async def bench_throughput(total: int, concurrency: int, rounds: int = 3) -> list[str]:
    rows = []
    async with FakeAnthropic.serve() as fake:
        settings = settings_for("anthropic", fake.url)
        adapter = AnthropicAdapter(settings.providers[0])
        try:

            async def run_callers(call: Callable[[], Awaitable[object]]) -> float:
                remaining = total

                async def caller() -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        await call()

                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(caller)
                return total / (time.perf_counter() - start)

            await run_callers(
                partial(adapter.complete, CALL, KEY)
            )  # warm-up: opens the connections
            direct: list[float] = []
            pooled: list[float] = []

            async def body(inbox: trio.MemorySendChannel[CompletionRequest]) -> None:
                for _ in range(rounds):  # alternate, so both see the same machine load
                    direct.append(await run_callers(partial(adapter.complete, CALL, KEY)))
                    pooled.append(await run_callers(partial(via_pool, inbox)))

            await with_pool(adapter, settings, body)
        finally:
            await adapter.aclose()
    rows.append(
        f"| direct, {concurrency} callers | {total} × {rounds} | "
        f"{' / '.join(f'{r:.0f}' for r in direct)} |"
    )
    rows.append(
        f"| through the pool, {concurrency} callers | {total} × {rounds} | "
        f"{' / '.join(f'{r:.0f}' for r in pooled)} |"
    )
    return rows


async def main(calls: int, concurrency: int) -> None:
    print(f"provider pool benchmark: {calls} sequential calls, {concurrency} concurrent callers")
    print()
    print("| latency per call | calls | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for row in await bench_instant(calls):
        print(row)
    for row in await bench_added(calls):
        print(row)
    print()
    print("| throughput | calls × rounds | calls/s per round |")
    print("|---|---|---|")
    for row in await bench_throughput(max(calls, concurrency * 10), concurrency):
        print(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main, args.calls, args.concurrency)
