"""What the supervision tree is built from: stores, adapters, channel clients, and the channels between actors.

``concierge run`` and ``concierge chat`` share ``open_runtime`` so that the console
talks to exactly the pipeline a messenger user reaches: ingest, router, conversation
actors, provider pool, durable outbox. Everything opened here lives as long as the
command and closes after the tree has stopped.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TypeAlias, TypeVar

import attrs
import structlog
import trio
import trio_asyncio

from actors import PresenceBoard, TurnGate
from concierge import __version__
from concierge.app.channels import ChannelParts, open_channel_parts
from concierge.app.drain import Release, release_nothing
from concierge.app.replicas import Replicas
from concierge.domain import (
    Admission,
    Ingest,
    KnowledgeBase,
    Languages,
    People,
    load_knowledge,
    load_languages,
    utc_today,
)
from concierge.observability import HealthBoard, configure_logging
from concierge.protocol import (
    Channel,
    DailyUsage,
    OutboxMsg,
    ProviderPoolMsg,
    RouterMsg,
)
from concierge.providers import Adapter, OfflineAdapter, build_adapter
from concierge.settings import ProviderSettings, Settings, secrets_of
from concierge.store import SessionCache, Store, open_session_cache, open_store
from supervisors import Backoff, ChildSpec, Strategy, Supervisor

log = structlog.get_logger(__name__)

POOL_QUEUE = 256
ROUTER_QUEUE = 512
NUDGE_QUEUE = 16
REPORT_QUEUE = 256

T = TypeVar("T")
Pair: TypeAlias = tuple[trio.MemorySendChannel[T], trio.MemoryReceiveChannel[T]]


@attrs.define(kw_only=True)
class Runtime:
    """Everything the supervision tree is built from; lives as long as the daemon."""

    settings: Settings
    board: HealthBoard
    store: Store
    cache: SessionCache
    languages: Languages
    knowledge: KnowledgeBase
    usage: DailyUsage
    """Tokens people and providers used today before this start (their budgets go on)."""
    people: People
    """Which person each identity is (persons on several channels, from the store at start)."""
    adapters: list[Adapter]
    ingest: Ingest
    router_send: trio.MemorySendChannel[RouterMsg]
    router_receive: trio.MemoryReceiveChannel[RouterMsg]
    pool_send: trio.MemorySendChannel[ProviderPoolMsg]
    pool_receive: trio.MemoryReceiveChannel[ProviderPoolMsg]
    nudges: dict[Channel, Pair[OutboxMsg]]
    presence: dict[Channel, PresenceBoard]
    admission: Admission
    """Turns in flight: ingest, the inbox drain and the conversations share it."""
    replicas: Replicas = attrs.field(factory=lambda: Replicas(shared=None))
    """Leases, elections and sessions when replicas share PostgreSQL."""
    parts: ChannelParts = attrs.field(factory=ChannelParts)
    http_binds: list[str] = attrs.field(factory=list)
    gate: TurnGate = attrs.field(factory=TurnGate)
    """Every conversation's turns pass it; the drain closes it."""
    release: Release = release_nothing
    sending: TurnGate = attrs.field(factory=TurnGate)
    """Every outbox delivery passes it; the drain closes it once the outbox is flushed."""
    release_claims: Release = release_nothing
    """What the drain calls once the senders stopped: give back the outbox rows they
    claimed and did not send."""
    """What the drain calls once the turns in flight are done and before the outbox is
    flushed: give back what this process holds for other replicas (their leases)."""

    def backoff(self) -> Backoff:
        s = self.settings.supervision
        return Backoff(
            initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, jitter_s=s.backoff_initial_s / 2
        )

    def supervisor(
        self, name: str, children: Sequence[ChildSpec], strategy: Strategy = Strategy.ONE_FOR_ONE
    ) -> Supervisor:
        s = self.settings.supervision
        return Supervisor(
            name=name,
            children=children,
            strategy=strategy,
            max_restarts=s.max_restarts,
            period_s=s.period_s,
            backoff=self.backoff(),
            reset_after_s=s.reset_after_s,
        )


def enabled_channels(settings: Settings, *, console: bool) -> list[Channel]:
    channels: list[Channel] = []
    if settings.telegram is not None:
        channels.append(Channel.TELEGRAM)
    if settings.waha is not None:
        channels.append(Channel.WAHA)
    if console:
        channels.append(Channel.CONSOLE)
    return channels


@asynccontextmanager
async def asyncio_bridge(settings: Settings) -> AsyncIterator[None]:
    """PostgreSQL runs through trio-asyncio: one loop for the command's lifetime."""
    if settings.store.database_url is None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


def log_to_stderr(settings: Settings) -> None:
    """For commands whose output is on stdout: logs go to stderr, quiet unless asked for."""
    configure_logging(
        level=settings.log.level if settings.log.level == "debug" else "warning",
        fmt=settings.log.format,
        secrets=secrets_of(settings),
        stream=sys.stderr,
        cache_loggers=True,
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, channels: Sequence[Channel], messengers: bool = False
) -> AsyncIterator[Runtime]:
    """Open stores, adapters and (with ``messengers``) the Telegram/WAHA clients, failing fast
    with a clear error, and the memory channels between actors."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(asyncio_bridge(settings))
        store = await stack.enter_async_context(open_store(settings.store))
        cache = await stack.enter_async_context(open_session_cache(settings.store))
        languages = load_languages(settings.config_dir / "languages")
        knowledge = load_knowledge(settings.config_dir, languages.analyzer())
        replicas = Replicas.of(store, settings.store)
        # After the tree stopped, before the store closes: whatever lease is left goes now.
        stack.push_async_callback(replicas.release_leases)
        usage = await store.usage_on(utc_today())
        people = People()
        people.load(await store.linked_identities())
        offline = partial(_offline_adapter, knowledge=knowledge, languages=languages)
        adapters = [build_adapter(p, offline_factory=offline) for p in settings.pool.providers]
        stack.push_async_callback(_close_adapters, adapters)
        router_send, router_receive = trio.open_memory_channel[RouterMsg](ROUTER_QUEUE)
        pool_send, pool_receive = trio.open_memory_channel[ProviderPoolMsg](POOL_QUEUE)
        for channel in (router_send, router_receive, pool_send, pool_receive):
            stack.callback(channel.close)
        conversation = settings.conversation
        admission = Admission(
            max_turns=conversation.max_turns,
            lag_target_s=conversation.loop_lag_target_s,
            expire_s=conversation.turn_timeout_s * 2 + 60,
        )
        rt = Runtime(
            settings=settings,
            board=HealthBoard(version=__version__),
            store=store,
            cache=cache,
            languages=languages,
            knowledge=knowledge,
            usage=usage,
            people=people,
            adapters=adapters,
            ingest=Ingest(store=store, router=router_send, admission=admission),
            admission=admission,
            router_send=router_send,
            router_receive=router_receive,
            pool_send=pool_send,
            pool_receive=pool_receive,
            nudges={c: trio.open_memory_channel[OutboxMsg](NUDGE_QUEUE) for c in channels},
            presence={c: PresenceBoard() for c in channels},
            replicas=replicas,
            release=replicas.release,
            release_claims=replicas.release_claims,
        )
        rt.board.register(replicas.elections)
        if replicas.leases is not None:
            rt.board.register(replicas.leases.stats)
        if messengers:
            rt.parts = await open_channel_parts(
                stack,
                settings=settings,
                store=store,
                ingest=rt.ingest,
                board=rt.board,
                presence=rt.presence,
                elect=replicas.elect,
            )
        yield rt


def _offline_adapter(
    settings: ProviderSettings, *, knowledge: KnowledgeBase, languages: Languages
) -> Adapter:
    return OfflineAdapter(knowledge, languages, name=settings.name, model=settings.model)


async def _close_adapters(adapters: list[Adapter]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        for adapter in adapters:
            try:
                await adapter.aclose()
            except Exception:
                log.warning("provider.close_failed", provider=adapter.name, exc_info=True)
