"""Assemble the configured messenger channels: senders, listener actors and webhook routes.

Telegram and WAHA each contribute a ``ChannelSender`` for the outbox, supervised
listeners (poller or webhook registration, "typing..." keep-alives, session watch)
and their webhook route: bare ASGI in front of the app for Telegram, a Quart
blueprint for WAHA. Clients live as long as the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import attrs
from quart import Blueprint

from actors import (
    Pacing,
    PresenceBoard,
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
from concierge.protocol import Channel
from concierge.settings import HttpSettings, Settings, TelegramSettings, WahaSettings
from concierge.store import Store
from supervisors import ChildSpec

TELEGRAM_SPARE_CONNECTIONS = 16
"""Connections beyond the sends in flight: "typing...", the poller, webhook checks."""
TELEGRAM_SEND_S = 1.0
"""A Telegram send's round trip and its commit, generously: sends in flight cover it at the rate."""


def telegram_pacing(telegram: TelegramSettings) -> Pacing:
    """Telegram's pace: ``TELEGRAM_SEND_RATE_PER_S`` overall, ``TELEGRAM_CHAT_INTERVAL_S`` per chat."""
    return Pacing.for_rate(
        rate_per_s=telegram.send_rate_per_s,
        per_chat_interval_s=telegram.chat_interval_s,
        send_s=TELEGRAM_SEND_S,
    )


def waha_pacing(waha: WahaSettings) -> Pacing:
    """WhatsApp bans accounts that send in bursts: slower than Telegram, per chat and overall.

    A WAHA send includes the "typing..." pause (up to ``WAHA_TYPING_MAX_S``), so the
    sends in flight cover that pause at the rate.
    """
    return Pacing.for_rate(
        rate_per_s=waha.send_rate_per_s,
        per_chat_interval_s=waha.chat_interval_s,
        send_s=1.0 + waha.typing_max_s,
    )


@attrs.define
class ChannelParts:
    senders: list[ChannelSender] = attrs.field(factory=list)
    pacing: dict[Channel, Pacing] = attrs.field(factory=dict)
    listeners: list[ChildSpec] = attrs.field(factory=list)
    blueprints: list[Blueprint] = attrs.field(factory=list)
    asgi_wrappers: list[Callable[..., ASGIApp]] = attrs.field(factory=list)
    """Each called as ``wrap(app, observe=...)``: bare-ASGI routes counted with the app's."""


async def open_channel_parts(
    stack: AsyncExitStack,
    *,
    settings: Settings,
    store: Store,
    ingest: Ingest,
    board: HealthBoard,
    presence: Mapping[Channel, PresenceBoard],
    elect: Callable[[str, Callable[..., Any]], Callable[..., Any]] = lambda _name, start: start,
) -> ChannelParts:
    """Clients are entered on ``stack`` so that they close after the supervision tree stops."""
    parts = ChannelParts()
    if settings.telegram is not None:
        await _telegram(
            parts,
            stack,
            settings.telegram,
            ingest=ingest,
            store=store,
            board=board,
            presence=presence[Channel.TELEGRAM],
            http=settings.http,
            elect=elect,
        )
    if settings.waha is not None:
        await _waha(
            parts,
            stack,
            settings.waha,
            ingest=ingest,
            store=store,
            board=board,
            presence=presence[Channel.WAHA],
        )
    return parts


async def _telegram(
    parts: ChannelParts,
    stack: AsyncExitStack,
    telegram: TelegramSettings,
    *,
    ingest: Ingest,
    store: Store,
    board: HealthBoard,
    presence: PresenceBoard,
    http: HttpSettings,
    elect: Callable[[str, Callable[..., Any]], Callable[..., Any]],
) -> None:
    """A sender, "typing...", and either the webhook route and its registration or the poller."""
    # getUpdates adds the long-poll timeout to its own; other calls keep the client's 10 s.
    pacing = telegram_pacing(telegram)
    client = await stack.enter_async_context(
        TelegramClient(
            token=telegram.bot_token,
            base_url=telegram.api_base_url,
            max_connections=pacing.concurrency + TELEGRAM_SPARE_CONNECTIONS,
        )
    )
    parts.senders.append(TelegramSender(client=client))
    parts.pacing[Channel.TELEGRAM] = pacing
    if telegram.mode == "webhook":
        assert telegram.webhook_secret is not None  # settings refuse webhook mode without one
        webhook_stats = TelegramWebhookStats()
        board.register(webhook_stats)
        # Answered in bare ASGI in front of the app: the same checks at about twice
        # the ack rate of a Quart route.
        parts.asgi_wrappers.append(
            partial(
                with_telegram_webhook,
                ingest=ingest,
                secret=telegram.webhook_secret,
                stats=webhook_stats,
                max_body_bytes=http.max_body_bytes,
                body_timeout_s=http.read_timeout_s,
                staff_chat_id=telegram.staff_chat_id,
            )
        )
        setup = partial(run_telegram_webhook_setup, client=client, settings=telegram)
        parts.listeners.append(ChildSpec(id="telegram.webhook_setup", start=setup))
    else:
        poller_stats = TelegramPollerStats()
        board.register(poller_stats)
        poller = partial(
            run_telegram_poller,
            client=client,
            store=store,
            ingest=ingest,
            settings=telegram,
            stats=poller_stats,
        )
        # One poller at a time among replicas: Telegram refuses a second long poll (409).
        parts.listeners.append(
            ChildSpec(id="telegram.poller", start=elect("telegram.poller", poller), shutdown_s=3.0)
        )
    typing = partial(run_telegram_typing, presence=presence, client=client)
    parts.listeners.append(ChildSpec(id="telegram.typing", start=typing))


async def _waha(
    parts: ChannelParts,
    stack: AsyncExitStack,
    waha: WahaSettings,
    *,
    ingest: Ingest,
    store: Store,
    board: HealthBoard,
    presence: PresenceBoard,
) -> None:
    """A paced sender, the webhook blueprint, "seen"/"typing..." and a watch on the session."""
    waha_startup_checks(waha)
    client = await stack.enter_async_context(open_waha_client(waha))
    parts.senders.append(WahaSender(client=client, pacing=WahaPacing.from_settings(waha)))
    parts.pacing[Channel.WAHA] = waha_pacing(waha)
    webhook_stats = WahaWebhookStats()
    board.register(webhook_stats)
    parts.blueprints.append(
        waha_blueprint(ingest=ingest, settings=waha, store=store, stats=webhook_stats)
    )
    watch = WahaSessionWatch(session=waha.session)
    board.register(watch)
    typing = partial(run_waha_presence, presence=presence, client=client)
    parts.listeners.append(ChildSpec(id="waha.presence", start=typing))
    session_watch = partial(run_waha_session_watch, client=client, watch=watch)
    parts.listeners.append(ChildSpec(id="waha.session_watch", start=session_watch))
