"""The long-running actors: router, conversations, staff desk, provider pool, outbox, listeners.

Each is ``run_<name>(*, ..., task_status)`` and is started by a supervisor; they
talk over bounded trio memory channels with the messages of ``concierge.protocol``.
"""

from __future__ import annotations

from .conversation import (
    ConversationDeps as ConversationDeps,
    ConversationMetrics as ConversationMetrics,
    run_conversation as run_conversation,
)
from .elected import ElectionStats as ElectionStats, run_elected as run_elected
from .erasure_watch import run_erasure_watch as run_erasure_watch
from .handoff_sweeper import run_handoff_sweeper as run_handoff_sweeper
from .inbox_listener import run_inbox_listener as run_inbox_listener
from .inbox_replay import run_inbox_replay as run_inbox_replay
from .leases import ConversationLeases as ConversationLeases, LeaseStats as LeaseStats
from .loop_lag import run_loop_lag_monitor as run_loop_lag_monitor
from .outbox import (
    OutboxStats as OutboxStats,
    Pacing as Pacing,
    default_pacing as default_pacing,
    run_outbox_sender as run_outbox_sender,
)
from .presence import PresenceBoard as PresenceBoard
from .provider_pool import ProviderPool as ProviderPool
from .retention import run_retention as run_retention
from .router import (
    RouterStats as RouterStats,
    run_router as run_router,
    wake_conversation as wake_conversation,
)
from .staff_desk import (
    STAFF_QUEUE as STAFF_QUEUE,
    run_staff_desk as run_staff_desk,
)
from .telegram import (
    TelegramPollerStats as TelegramPollerStats,
    run_telegram_poller as run_telegram_poller,
    run_telegram_typing as run_telegram_typing,
    run_telegram_webhook_setup as run_telegram_webhook_setup,
)
from .turn_gate import TurnGate as TurnGate
from .waha import (
    WahaSessionWatch as WahaSessionWatch,
    run_waha_presence as run_waha_presence,
    run_waha_session_watch as run_waha_session_watch,
)
