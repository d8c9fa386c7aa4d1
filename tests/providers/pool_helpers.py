"""Starting a provider pool in a test and asking it for a reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date
from functools import partial

import trio

from actors import ProviderPool
from actors.provider_pool import ask
from concierge.domain import utc_today
from concierge.protocol import CompletionRequest, CompletionResult, ProviderCall, Role, Turn
from concierge.providers import Adapter, CreditFetch
from concierge.settings import PoolSettings
from tests.waiting import eventually

TURNS = (Turn(role=Role.USER, text="À quelle heure est la messe ?"),)


@asynccontextmanager
async def running_pool(
    adapters: Sequence[Adapter],
    settings: PoolSettings,
    credit_fetchers: Mapping[str, CreditFetch] | None = None,
    today: Callable[[], date] = utc_today,
) -> AsyncIterator[tuple[ProviderPool, trio.MemorySendChannel[CompletionRequest]]]:
    pool = ProviderPool(
        adapters=adapters, settings=settings, credit_fetchers=credit_fetchers, today=today
    )
    send, receive = trio.open_memory_channel[CompletionRequest](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(pool.run, inbox=receive))
        with send:
            yield pool, send
        nursery.cancel_scope.cancel()


async def ask_pool(
    inbox: trio.MemorySendChannel[CompletionRequest],
    *,
    timeout_s: float = 30.0,
    cid: str = "cid-1",
    query: str = TURNS[-1].text,
    network: bool = True,
) -> CompletionResult:
    return await ask(
        inbox,
        ProviderCall(
            correlation_id=cid,
            system="Tu es l'accueil.",
            turns=TURNS,
            max_tokens=100,
            timeout_s=timeout_s,
            query=query,
        ),
        network=network,
    )


async def credits_read(pool: ProviderPool, provider: str) -> None:
    """Wait until the pool holds a credit reading (or a failed one) for every key of ``provider``."""

    def read() -> bool:
        return all(k.credit is not None for k in pool.statistics().provider(provider).keys)

    await eventually(read, f"a credit poll of every {provider} key")
