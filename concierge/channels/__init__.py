"""Telegram and WhatsApp (WAHA): wire formats, API clients, webhook routes and senders.

A parser turns a platform update into an ``InboundMessage``; a sender turns an
outbox row into API calls and a ``SendResult``.
"""

from __future__ import annotations

from .base import (
    ChannelSender as ChannelSender,
    SendResult as SendResult,
    SendStatus as SendStatus,
)
from .console import open_console as open_console
from .telegram_client import (
    TelegramApiError as TelegramApiError,
    TelegramClient as TelegramClient,
    TelegramError as TelegramError,
)
from .telegram_http import (
    ASGIApp as ASGIApp,
    TelegramWebhookStats as TelegramWebhookStats,
    with_telegram_webhook as with_telegram_webhook,
)
from .telegram_sender import TelegramSender as TelegramSender
from .telegram_wire import (
    ALLOWED_UPDATES as ALLOWED_UPDATES,
    Ignored as Ignored,
    MalformedUpdate as MalformedUpdate,
    parse_update as parse_update,
)
from .waha_client import (
    WahaCall as WahaCall,
    WahaClient as WahaClient,
    open_waha_client as open_waha_client,
)
from .waha_http import (
    WahaWebhookStats as WahaWebhookStats,
    waha_blueprint as waha_blueprint,
    waha_startup_checks as waha_startup_checks,
)
from .waha_sender import (
    WahaPacing as WahaPacing,
    WahaSender as WahaSender,
)
