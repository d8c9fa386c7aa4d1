"""Build the conversations subtree: keyed conversation actors, router, inbox replay, handoff sweeper.

The composition root calls ``build_conversations`` once and plugs
``service.supervisor.run`` into the root supervisor; ``service.router`` feeds
``/health`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio

from concierge.knowledge import KnowledgeBase
from concierge.protocol import (
    Channel,
    CompletionRequest,
    Inbound,
    OutboxNudge,
    PresenceMsg,
    TurnCompleted,
)
from concierge.settings import ConversationSettings, SupervisionSettings
from concierge.store.base import SessionCache, Store


@attrs.frozen(kw_only=True)
class ConversationsService:
    """What the composition root needs from the conversations subtree."""

    supervisor: object
    router: object


def build_conversations(
    *,
    settings: ConversationSettings,
    supervision: SupervisionSettings,
    store: Store,
    cache: SessionCache,
    knowledge: KnowledgeBase,
    pool_inbox: trio.MemorySendChannel[CompletionRequest],
    router_inbox: trio.MemoryReceiveChannel[Inbound],
    router_send: trio.MemorySendChannel[Inbound],
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxNudge]],
    presence: Mapping[Channel, trio.MemorySendChannel[PresenceMsg]],
    turn_reports: trio.MemorySendChannel[TurnCompleted] | None = None,
) -> ConversationsService:
    """Wire the subtree; raises a clear error when triage rules or prompts are missing or invalid."""
    raise NotImplementedError
