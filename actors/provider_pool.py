"""The provider pool actor: answers ``CompletionRequest``s through the configured providers.

Each request runs in its own task under one deadline; the pool rotates keys,
keeps a circuit breaker per provider, fails over in configured order and falls
back to the offline provider last. ``ask`` is the caller's side of the exchange.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import structlog
import trio

from concierge.protocol import (
    CompletionFailed,
    CompletionRequest,
    CompletionResult,
    ServiceType,
    Turn,
)
from concierge.providers.base import Adapter
from concierge.settings import PoolSettings

log = structlog.get_logger(__name__)

ASK_MARGIN_S = 2.0
"""How much longer than the turn's budget ``ask`` waits: the pool answers by the deadline."""


async def ask(
    pool_inbox: trio.MemorySendChannel[CompletionRequest],
    *,
    correlation_id: str,
    system: str,
    turns: Sequence[Turn],
    max_tokens: int,
    timeout_s: float,
    query: str = "",
    language: str = "fr",
    service_type: ServiceType = ServiceType.RENSEIGNEMENT,
    margin_s: float = ASK_MARGIN_S,
) -> CompletionResult:
    """Ask the pool for one reply; never raises for a pool that is slow, stopped or crashed.

    Sending and waiting share one bound (``timeout_s + margin_s``); anything that
    prevents an answer comes back as ``CompletionFailed``.
    """
    reply_to, replies = trio.open_memory_channel[CompletionResult](1)
    request = CompletionRequest(
        correlation_id=correlation_id, system=system, turns=tuple(turns), max_tokens=max_tokens,
        timeout_s=timeout_s, reply_to=reply_to, query=query, language=language,
        service_type=service_type,
    )
    with replies, trio.move_on_after(timeout_s + margin_s):
        try:
            await pool_inbox.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reply_to.close()
            return CompletionFailed(correlation_id=correlation_id, reason="the provider pool is not running")
        try:
            return await replies.receive()
        except trio.EndOfChannel:
            return CompletionFailed(
                correlation_id=correlation_id, reason="the provider pool stopped before answering"
            )
    # The request may never have been delivered: closing our clone is harmless either way.
    return CompletionFailed(
        correlation_id=correlation_id, reason=f"no answer from the provider pool within {timeout_s + margin_s:g} s"
    )


class ProviderPool:
    """Provider state (keys, breakers, credits, statistics) and the turn loop that uses it.

    The state outlives ``run``: a supervisor restarting the actor keeps the breakers.
    """

    def __init__(
        self,
        *,
        adapters: Sequence[Adapter],
        settings: PoolSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._adapters = tuple(adapters)
        self._settings = settings
        self._rng = rng or random.Random()

    async def run(
        self,
        *,
        inbox: trio.MemoryReceiveChannel[CompletionRequest],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise NotImplementedError


async def run_provider_pool(
    *,
    pool: ProviderPool,
    inbox: trio.MemoryReceiveChannel[CompletionRequest],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The actor entry point: serve ``inbox`` until it closes."""
    await pool.run(inbox=inbox, task_status=task_status)
