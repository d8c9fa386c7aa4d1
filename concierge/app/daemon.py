"""The composition root: open the stores, build the supervision tree, run until told to stop.

``concierge run`` and ``concierge chat`` share ``open_runtime`` so that the
console talks to exactly the pipeline a messenger user reaches: ingest, router,
conversation actors, provider pool, durable outbox. Nothing imports this module.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import attrs
import structlog
import trio
import trio_asyncio

from actors import (
    OutboxStats,
    Pacing,
    ProviderPool,
    default_pacing,
    run_outbox_sender,
    run_retention,
)
from concierge import __version__
from concierge.app.api import ApiDeps, ApiStatus, install_api
from concierge.app.channels import ChannelParts, open_channel_parts
from concierge.app.console import console_blueprint
from concierge.app.conversations import build_conversations
from concierge.app.gc_policy import run_collector, tune_gc
from concierge.app.http import check_can_listen, create_app, run_http
from concierge.channels import ChannelSender
from concierge.domain import (
    Ingest,
    KnowledgeBase,
    Languages,
    load_knowledge,
    load_languages,
    utc_today,
)
from concierge.observability import HealthBoard, configure_logging
from concierge.protocol import (
    Channel,
    DailyUsage,
    OutboxMsg,
    PresenceMsg,
    ProviderPoolMsg,
    RouterMsg,
    TurnCompleted,
)
from concierge.providers import Adapter, OfflineAdapter, build_adapter
from concierge.settings import ProviderSettings, Settings, secrets_of
from concierge.store import (
    CacheMonitor,
    SessionCache,
    Store,
    StoreMonitor,
    open_session_cache,
    open_store,
    run_cache_monitor,
    run_store_monitor,
)
from supervisors import Backoff, ChildSpec, RestartIntensityExceeded, Strategy, Supervisor

log = structlog.get_logger(__name__)

POOL_QUEUE = 256
ROUTER_QUEUE = 512
NUDGE_QUEUE = 16
PRESENCE_QUEUE = 256
REPORT_QUEUE = 256
STORE_PING_S = 5.0
RETENTION_SWEEP_S = 3600.0


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
    adapters: list[Adapter]
    ingest: Ingest
    router_send: trio.MemorySendChannel[RouterMsg]
    router_receive: trio.MemoryReceiveChannel[RouterMsg]
    pool_send: trio.MemorySendChannel[ProviderPoolMsg]
    pool_receive: trio.MemoryReceiveChannel[ProviderPoolMsg]
    nudges: dict[
        Channel, tuple[trio.MemorySendChannel[OutboxMsg], trio.MemoryReceiveChannel[OutboxMsg]]
    ]
    presence: dict[
        Channel, tuple[trio.MemorySendChannel[PresenceMsg], trio.MemoryReceiveChannel[PresenceMsg]]
    ]
    parts: ChannelParts = attrs.field(factory=ChannelParts)
    http_binds: list[str] = attrs.field(factory=list)

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
async def open_runtime(
    settings: Settings, *, channels: Sequence[Channel], messengers: bool = False
) -> AsyncIterator[Runtime]:
    """Open stores, adapters and (with ``messengers``) the Telegram/WAHA clients, failing fast
    with a clear error, and the memory channels between actors."""
    async with AsyncExitStack() as stack:
        if settings.store.database_url is not None:
            await stack.enter_async_context(trio_asyncio.open_loop())
        store = await stack.enter_async_context(open_store(settings.store))
        cache = await stack.enter_async_context(open_session_cache(settings.store))
        languages = load_languages(settings.config_dir / "languages")
        knowledge = load_knowledge(settings.config_dir, languages.analyzer())
        usage = await store.usage_on(utc_today())
        offline = partial(_offline_adapter, knowledge=knowledge, languages=languages)
        adapters = [build_adapter(p, offline_factory=offline) for p in settings.pool.providers]
        stack.push_async_callback(_close_adapters, adapters)
        router_send, router_receive = trio.open_memory_channel[RouterMsg](ROUTER_QUEUE)
        pool_send, pool_receive = trio.open_memory_channel[ProviderPoolMsg](POOL_QUEUE)
        for channel in (router_send, router_receive, pool_send, pool_receive):
            stack.callback(channel.close)
        nudges: dict[
            Channel,
            tuple[trio.MemorySendChannel[OutboxMsg], trio.MemoryReceiveChannel[OutboxMsg]],
        ] = {}
        presence: dict[
            Channel,
            tuple[trio.MemorySendChannel[PresenceMsg], trio.MemoryReceiveChannel[PresenceMsg]],
        ] = {}
        for c in channels:
            nudges[c] = trio.open_memory_channel[OutboxMsg](NUDGE_QUEUE)
            presence[c] = trio.open_memory_channel[PresenceMsg](PRESENCE_QUEUE)
        rt = Runtime(
            settings=settings,
            board=HealthBoard(version=__version__),
            store=store,
            cache=cache,
            languages=languages,
            knowledge=knowledge,
            usage=usage,
            adapters=adapters,
            ingest=Ingest(store=store, router=router_send),
            router_send=router_send,
            router_receive=router_receive,
            pool_send=pool_send,
            pool_receive=pool_receive,
            nudges=nudges,
            presence=presence,
        )
        if messengers:
            rt.parts = await open_channel_parts(
                stack,
                settings=settings,
                store=store,
                ingest=rt.ingest,
                board=rt.board,
                presence=presence,
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


def build_tree(
    rt: Runtime,
    *,
    senders: Sequence[ChannelSender],
    listeners: Sequence[ChildSpec] = (),
    http: bool = True,
    blueprints: Sequence[Any] = (),
    asgi_wrappers: Sequence[Callable[..., Any]] = (),
    turn_reports: trio.MemorySendChannel[TurnCompleted] | None = None,
) -> Supervisor:
    """The root supervisor and its subtrees, in start order (stop order is the reverse)."""
    settings = rt.settings
    store_monitor = StoreMonitor(backend=rt.store.backend)
    cache_monitor = CacheMonitor(backend=rt.cache.backend)
    rt.board.register(store_monitor)
    rt.board.register(cache_monitor)
    stores = rt.supervisor(
        "stores",
        [
            ChildSpec(
                id="store_monitor",
                start=partial(
                    run_store_monitor,
                    store=rt.store,
                    monitor=store_monitor,
                    interval_s=STORE_PING_S,
                ),
            ),
            ChildSpec(
                id="cache_monitor",
                start=partial(
                    run_cache_monitor,
                    cache=rt.cache,
                    monitor=cache_monitor,
                    interval_s=STORE_PING_S,
                ),
            ),
            ChildSpec(
                id="retention",
                start=partial(
                    run_retention,
                    store=rt.store,
                    retention_days=settings.store.retention_days,
                    interval_s=RETENTION_SWEEP_S,
                ),
            ),
        ],
    )

    pool = ProviderPool(adapters=rt.adapters, settings=settings.pool)
    pool.restore_usage(rt.usage)
    rt.board.register(pool)

    async def run_pool(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await pool.run(inbox=rt.pool_receive.clone(), task_status=task_status)

    conversations = build_conversations(
        settings=settings.conversation,
        supervision=settings.supervision,
        store=rt.store,
        cache=rt.cache,
        languages=rt.languages,
        knowledge=rt.knowledge,
        usage=rt.usage,
        pool_inbox=rt.pool_send,
        router_inbox=rt.router_receive,
        router_send=rt.router_send,
        outbox_nudges={c: pair[0] for c, pair in rt.nudges.items()},
        presence={c: pair[0] for c, pair in rt.presence.items()},
        turn_reports=turn_reports,
    )
    rt.board.register(conversations)
    rt.board.watch_supervisor(conversations.supervisor.statistics)

    outbox_children = []
    for sender in senders:
        stats = OutboxStats(channel=sender.channel)
        rt.board.register(stats)
        outbox_children.append(
            ChildSpec(
                id=f"outbox.{sender.channel.value}",
                start=partial(
                    _run_sender,
                    sender=sender,
                    store=rt.store,
                    stats=stats,
                    nudges=rt.nudges[sender.channel][1],
                    pacing=rt.parts.pacing.get(sender.channel, default_pacing(sender.channel)),
                ),
            )
        )
    outbox = rt.supervisor("outbox", outbox_children)
    rt.board.watch_supervisor(stores.statistics)
    if outbox_children:
        rt.board.watch_supervisor(outbox.statistics)

    children = [
        ChildSpec(id="collector", start=run_collector),
        ChildSpec(id="stores", start=stores.run, shutdown_s=10),
        ChildSpec(id="provider_pool", start=run_pool, shutdown_s=5),
        ChildSpec(
            id="conversations",
            start=conversations.supervisor.run,
            shutdown_s=settings.drain_timeout_s / 2,
        ),
    ]
    if outbox_children:
        children.append(ChildSpec(id="outbox", start=outbox.run, shutdown_s=5))
    if listeners:
        channels = rt.supervisor("channels", listeners)
        rt.board.watch_supervisor(channels.statistics)
        children.append(ChildSpec(id="channels", start=channels.run, shutdown_s=5))
    if http:
        api_status = ApiStatus(signing_keys=len(settings.api.keys))
        rt.board.register(api_status)
        install = []
        if settings.api.enabled:
            deps = ApiDeps(
                settings=settings.api, desk=conversations.desk, pool=pool, status=api_status
            )
            install.append(partial(install_api, deps=deps))
            blueprints = (*blueprints, console_blueprint())
        app: Any = create_app(
            board=rt.board, settings=settings.http, blueprints=blueprints, install=install
        )
        observe = app.extensions["concierge.request_metrics"].observe
        for wrap in asgi_wrappers:
            app = wrap(app, observe=observe)
        children.append(
            ChildSpec(
                id="http",
                start=partial(
                    run_http, app=app, settings=settings.http, on_bound=rt.http_binds.extend
                ),
                shutdown_s=settings.http.graceful_timeout_s + 2,
            )
        )
    root = rt.supervisor("root", children)
    rt.board.watch_supervisor(root.statistics)
    return root


async def _run_sender(
    *,
    sender: ChannelSender,
    store: Store,
    stats: OutboxStats,
    nudges: trio.MemoryReceiveChannel[OutboxMsg],
    pacing: Pacing,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # A clone per incarnation: the sender closes what it is given, a restart needs it open.
    await run_outbox_sender(
        sender=sender,
        store=store,
        nudges=nudges.clone(),
        pacing=pacing,
        stats=stats,
        task_status=task_status,
    )


async def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0 after a drain) or until the root gives up (exit 1)."""
    check_can_listen(settings.http)
    channels = enabled_channels(settings, console=False)
    async with open_runtime(settings, channels=channels, messengers=True) as rt:
        parts = rt.parts
        root = build_tree(
            rt,
            senders=parts.senders,
            listeners=parts.listeners,
            blueprints=parts.blueprints,
            asgi_wrappers=parts.asgi_wrappers,
        )
        return await supervise_until_signalled(rt, root)


async def supervise_until_signalled(rt: Runtime, root: Supervisor) -> int:
    log.info(
        "daemon.starting",
        version=__version__,
        store=rt.store.backend,
        cache=rt.cache.backend,
        providers=[a.name for a in rt.adapters],
    )
    exit_code = 0
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, rt, root, nursery.cancel_scope)
            await root.run()
            nursery.cancel_scope.cancel()
    except* RestartIntensityExceeded as group:
        log.error("daemon.gave_up", caused_by=repr(group.exceptions[0]), exc_info=group)
        exit_code = 1
    log.info("daemon.stopped", exit_code=exit_code)
    return exit_code


async def _stop_on_signal(rt: Runtime, root: Supervisor, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info(
                "daemon.stopping",
                signal=signal.Signals(signum).name,
                drain_timeout_s=rt.settings.drain_timeout_s,
            )
            rt.board.draining = True
            break
        with trio.move_on_after(rt.settings.drain_timeout_s) as drain:
            async with trio.open_nursery() as nursery:

                async def shutdown_then_stop_listening() -> None:
                    await root.shutdown()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(shutdown_then_stop_listening)
                async for signum in signals:
                    log.warning("daemon.stopping_now", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
        if drain.cancelled_caught:
            log.warning("daemon.drain_timed_out", drain_timeout_s=rt.settings.drain_timeout_s)
        scope.cancel()


def main(settings: Settings, *, run: Callable[[Settings], Any] = run_daemon) -> int:
    configure_logging(
        level=settings.log.level,
        fmt=settings.log.format,
        secrets=secrets_of(settings),
        cache_loggers=True,
    )
    tune_gc()
    code: int = trio.run(run, settings)
    return code
