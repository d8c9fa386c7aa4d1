"""The supervision tree: the root supervisor and its subtrees, built from a ``Runtime``.

Children start in this order and stop in the reverse one: the garbage collector's
timer, the stores' monitors and retention, the provider pool, the conversations
subtree, the outbox senders, the channels' listeners, the HTTP app (with the operator
API and the staff console when JWT keys are set). Each subtree
registers what it reports on the runtime's ``HealthBoard``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from actors import (
    OutboxStats,
    Pacing,
    ProviderPool,
    TurnGate,
    default_pacing,
    run_loop_lag_monitor,
    run_outbox_sender,
    run_retention,
)
from concierge.app.api import ApiDeps, ApiStatus, install_api
from concierge.app.console import console_blueprint
from concierge.app.conversations import ConversationsService, build_conversations
from concierge.app.gc_policy import run_collector
from concierge.app.http import create_app, run_http
from concierge.app.runtime import Runtime
from concierge.channels import ChannelSender
from concierge.domain import Desk
from concierge.protocol import OutboxMsg, TurnCompleted
from concierge.store import Monitor, Store, run_monitor
from supervisors import ChildSpec, Supervisor

STORE_PING_S = 5.0
RETENTION_SWEEP_S = 3600.0


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
    stores = _stores(rt)
    pool, run_pool = _provider_pool(rt)
    conversations = _conversations(rt, turn_reports)
    outbox = _outbox(rt, senders)
    rt.board.watch_supervisor(stores.statistics)
    rt.board.register(rt.admission)
    children = [
        ChildSpec(id="collector", start=run_collector),
        ChildSpec(id="loop_lag", start=partial(run_loop_lag_monitor, admission=rt.admission)),
        ChildSpec(id="stores", start=stores.run, shutdown_s=10),
        ChildSpec(id="provider_pool", start=run_pool, shutdown_s=5),
        ChildSpec(
            id="conversations",
            start=conversations.supervisor.run,
            shutdown_s=settings.drain_timeout_s / 2,
        ),
    ]
    if senders:
        rt.board.watch_supervisor(outbox.statistics)
        children.append(ChildSpec(id="outbox", start=outbox.run, shutdown_s=5))
    if listeners:
        channels = rt.supervisor("channels", listeners)
        rt.board.watch_supervisor(channels.statistics)
        children.append(ChildSpec(id="channels", start=channels.run, shutdown_s=5))
    if http:
        children.append(_http(rt, blueprints, asgi_wrappers, desk=conversations.desk, pool=pool))
    root = rt.supervisor("root", children)
    rt.board.watch_supervisor(root.statistics)
    return root


def build_messenger_tree(rt: Runtime) -> Supervisor:
    """The daemon's tree: the messenger channels ``open_runtime(messengers=True)`` opened."""
    parts = rt.parts
    return build_tree(
        rt,
        senders=parts.senders,
        listeners=parts.listeners,
        blueprints=parts.blueprints,
        asgi_wrappers=parts.asgi_wrappers,
    )


def _stores(rt: Runtime) -> Supervisor:
    """The store's and the cache's monitors, and the retention sweeper."""
    store_monitor = Monitor.of_store(backend=rt.store.backend)
    cache_monitor = Monitor.of_cache(backend=rt.cache.backend)
    rt.board.register(store_monitor)
    rt.board.register(cache_monitor)
    ping = partial(run_monitor, interval_s=STORE_PING_S)
    retention = partial(
        run_retention,
        store=rt.store,
        retention_days=rt.settings.store.retention_days,
        interval_s=RETENTION_SWEEP_S,
    )
    return rt.supervisor(
        "stores",
        [
            ChildSpec(
                id="store_monitor", start=partial(ping, ping=rt.store.ping, monitor=store_monitor)
            ),
            ChildSpec(
                id="cache_monitor", start=partial(ping, ping=rt.cache.ping, monitor=cache_monitor)
            ),
            ChildSpec(id="retention", start=rt.replicas.elect("retention", retention)),
        ],
    )


def _provider_pool(rt: Runtime) -> tuple[ProviderPool, Callable[..., Any]]:
    """The pool and its start function; its state (breakers, keys) outlives a restart."""
    pool = ProviderPool(adapters=rt.adapters, settings=rt.settings.pool)
    pool.restore_usage(rt.usage)
    rt.board.register(pool)

    async def run_pool(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await pool.run(inbox=rt.pool_receive.clone(), task_status=task_status)

    return pool, run_pool


def _conversations(
    rt: Runtime, turn_reports: trio.MemorySendChannel[TurnCompleted] | None
) -> ConversationsService:
    settings = rt.settings
    conversations = build_conversations(
        settings=settings.conversation,
        supervision=settings.supervision,
        store=rt.store,
        cache=rt.cache,
        languages=rt.languages,
        knowledge=rt.knowledge,
        usage=rt.usage,
        people=rt.people,
        pool_inbox=rt.pool_send,
        router_inbox=rt.router_receive,
        router_send=rt.router_send,
        outbox_nudges={c: pair[0] for c, pair in rt.nudges.items()},
        presence=rt.presence,
        turn_reports=turn_reports,
        gate=rt.gate,
        replicas=rt.replicas,
        admission=rt.admission,
    )
    rt.board.register(conversations)
    rt.board.watch_supervisor(conversations.supervisor.statistics)
    return conversations


def _outbox(rt: Runtime, senders: Sequence[ChannelSender]) -> Supervisor:
    """One sender actor per channel, paced as the channel needs."""
    children = []
    all_stats: list[OutboxStats] = []
    rt.admission.outbox_backlog = lambda: sum(s.backlog for s in all_stats)
    for sender in senders:
        channel = sender.channel
        stats = OutboxStats(channel=channel)
        all_stats.append(stats)
        rt.board.register(stats)
        start = partial(
            _run_sender,
            sender=sender,
            store=rt.store,
            stats=stats,
            nudges=rt.nudges[channel][1],
            pacing=rt.parts.pacing.get(channel, default_pacing(channel)),
            gate=rt.sending,
        )
        children.append(ChildSpec(id=f"outbox.{channel.value}", start=start))
    return rt.supervisor("outbox", children)


async def _run_sender(
    *,
    sender: ChannelSender,
    store: Store,
    stats: OutboxStats,
    nudges: trio.MemoryReceiveChannel[OutboxMsg],
    pacing: Pacing,
    gate: TurnGate,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # A clone per incarnation: the sender closes what it is given, a restart needs it open.
    await run_outbox_sender(
        sender=sender,
        store=store,
        nudges=nudges.clone(),
        pacing=pacing,
        stats=stats,
        gate=gate,
        task_status=task_status,
    )


def _http(
    rt: Runtime,
    blueprints: Sequence[Any],
    asgi_wrappers: Sequence[Callable[..., Any]],
    *,
    desk: Desk,
    pool: ProviderPool,
) -> ChildSpec:
    """The HTTP app (probes, metrics, webhooks; the operator API and the console when
    JWT keys are set), bare-ASGI routes in front of it counted with the app's own requests."""
    settings = rt.settings.http
    api = rt.settings.api
    api_status = ApiStatus(signing_keys=len(api.keys))
    rt.board.register(api_status)
    install = []
    if api.enabled:
        deps = ApiDeps(settings=api, desk=desk, pool=pool, status=api_status)
        install.append(partial(install_api, deps=deps))
        blueprints = (*blueprints, console_blueprint())
    app: Any = create_app(board=rt.board, settings=settings, blueprints=blueprints, install=install)
    observe = app.extensions["concierge.request_metrics"].observe
    for wrap in asgi_wrappers:
        app = wrap(app, observe=observe)
    return ChildSpec(
        id="http",
        start=partial(run_http, app=app, settings=settings, on_bound=rt.http_binds.extend),
        shutdown_s=settings.graceful_timeout_s + 2,
    )
