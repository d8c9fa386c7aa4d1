"""Assemble the configured messenger channels: senders, listener actors and webhook routes.

Telegram and WAHA each contribute a ``ChannelSender`` for the outbox, supervised
listeners (poller or webhook registration, "typing..." keep-alives, session watch)
and, for webhooks, a Quart blueprint. Clients live as long as the daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial

import attrs
import trio
from quart import Blueprint

from actors import (
    Pacing,
    TelegramPollerStats,
    WahaSessionWatch,
    run_telegram_poller,
    run_telegram_typing,
    run_telegram_webhook_setup,
    run_waha_presence,
    run_waha_session_watch,
)
from concierge.channels import (
    ASGIApp,
    ChannelSender,
    TelegramClient,
    TelegramSender,
    TelegramWebhookStats,
    WahaPacing,
    WahaSender,
    WahaWebhookStats,
    open_waha_client,
    waha_blueprint,
    waha_startup_checks,
    with_telegram_webhook,
)
from concierge.domain import Ingest
from concierge.observability import HealthBoard
from concierge.protocol import Channel, PresenceMsg
from concierge.settings import Settings
from concierge.store import Store
from supervisors import ChildSpec

WAHA_OUTBOX_PACING = Pacing(
    per_chat_interval_s=2.0, global_rate_per_s=5.0, global_burst=10, max_in_doubt=4
)
"""WhatsApp bans accounts that send in bursts: slower than Telegram, per chat and overall.

A WAHA send includes the "typing..." pause (up to ``WAHA_TYPING_MAX_S``), so one send
in doubt at a time would cap WhatsApp at one reply per pause; four keep replies
flowing at the cost of at most four duplicates per crash."""


@attrs.define
class ChannelParts:
    senders: list[ChannelSender] = attrs.field(factory=list)
    pacing: dict[Channel, Pacing] = attrs.field(factory=dict)
    listeners: list[ChildSpec] = attrs.field(factory=list)
    blueprints: list[Blueprint] = attrs.field(factory=list)
    asgi_wrappers: list[Callable[..., ASGIApp]] = attrs.field(factory=list)
    """Each called as ``wrap(app, observe=...)``: bare-ASGI routes counted with the app's."""


PresenceRunner = Callable[..., Awaitable[None]]


def _with_presence(
    run: PresenceRunner, presence: trio.MemoryReceiveChannel[PresenceMsg], **kwargs: object
) -> Callable[..., Awaitable[None]]:
    """A start function handing each incarnation its own clone: the actor closes what it gets."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run(presence=presence.clone(), task_status=task_status, **kwargs)

    return start


async def open_channel_parts(
    stack: AsyncExitStack,
    *,
    settings: Settings,
    store: Store,
    ingest: Ingest,
    board: HealthBoard,
    presence: dict[
        Channel, tuple[trio.MemorySendChannel[PresenceMsg], trio.MemoryReceiveChannel[PresenceMsg]]
    ],
) -> ChannelParts:
    """Clients are entered on ``stack`` so that they close after the supervision tree stops."""
    parts = ChannelParts()
    telegram = settings.telegram
    if telegram is not None:
        # getUpdates adds the long-poll timeout to its own; other calls keep the client's 10 s.
        client = await stack.enter_async_context(
            TelegramClient(token=telegram.bot_token, base_url=telegram.api_base_url)
        )
        parts.senders.append(TelegramSender(client=client))
        if telegram.mode == "webhook":
            assert telegram.webhook_secret is not None  # settings refuse webhook mode without one
            webhook_stats = TelegramWebhookStats()
            board.register(webhook_stats)
            # Answered in bare ASGI in front of the app: the same checks at about twice
            # the ack rate of the Quart route.
            parts.asgi_wrappers.append(
                partial(
                    with_telegram_webhook,
                    ingest=ingest,
                    secret=telegram.webhook_secret,
                    stats=webhook_stats,
                    max_body_bytes=settings.http.max_body_bytes,
                    body_timeout_s=settings.http.read_timeout_s,
                    staff_chat_id=telegram.staff_chat_id,
                )
            )
            parts.listeners.append(
                ChildSpec(
                    id="telegram.webhook_setup",
                    start=partial(run_telegram_webhook_setup, client=client, settings=telegram),
                )
            )
        else:
            poller_stats = TelegramPollerStats()
            board.register(poller_stats)
            parts.listeners.append(
                ChildSpec(
                    id="telegram.poller",
                    start=partial(
                        run_telegram_poller,
                        client=client,
                        store=store,
                        ingest=ingest,
                        settings=telegram,
                        stats=poller_stats,
                    ),
                    shutdown_s=3.0,
                )
            )
        parts.listeners.append(
            ChildSpec(
                id="telegram.typing",
                start=_with_presence(
                    run_telegram_typing, presence[Channel.TELEGRAM][1], client=client
                ),
            )
        )
    waha = settings.waha
    if waha is not None:
        waha_startup_checks(waha)
        waha_client = await stack.enter_async_context(open_waha_client(waha))
        parts.senders.append(WahaSender(client=waha_client, pacing=WahaPacing.from_settings(waha)))
        parts.pacing[Channel.WAHA] = WAHA_OUTBOX_PACING
        waha_stats = WahaWebhookStats()
        board.register(waha_stats)
        parts.blueprints.append(
            waha_blueprint(ingest=ingest, settings=waha, store=store, stats=waha_stats)
        )
        watch = WahaSessionWatch(session=waha.session)
        board.register(watch)
        parts.listeners.append(
            ChildSpec(
                id="waha.presence",
                start=_with_presence(
                    run_waha_presence, presence[Channel.WAHA][1], client=waha_client
                ),
            )
        )
        parts.listeners.append(
            ChildSpec(
                id="waha.session_watch",
                start=partial(run_waha_session_watch, client=waha_client, watch=watch),
            )
        )
    return parts
