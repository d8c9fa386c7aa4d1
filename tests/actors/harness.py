"""A running conversations subtree for tests: real SQLite store, memory session cache, real pool.

``running_concierge`` starts it; ``Harness`` sends messages as ingest does and reads
what came out (turn reports, outbox rows, presence, nudges).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import PresenceBoard, ProviderPool
from concierge.app.conversations import ConversationsService, build_conversations
from concierge.domain import KnowledgeBase, utc_today
from concierge.protocol import (
    Channel,
    CompletionRequest,
    Inbound,
    InboundKind,
    InboundMessage,
    OutboxNudge,
    OutboxRow,
    TurnCompleted,
    TurnRecord,
    new_correlation_id,
)
from concierge.providers import Adapter, OfflineAdapter
from concierge.settings import ConversationSettings, ProviderSettings, SupervisionSettings
from concierge.store import SessionCache, Store, open_store
from tests import shipped
from tests.providers.scripted import pool_settings, provider_settings
from tests.stores import store_settings

CONFIG_DIR = shipped.CONFIG_DIR
WAIT_S = 20.0


def conversation_settings(**overrides: Any) -> ConversationSettings:
    values: dict[str, Any] = {
        "config_dir": CONFIG_DIR,
        "idle_s": 900.0,
        "queue_size": 4,
        "context_turns": 12,
        "context_chars": 6000,
        "rate_per_min": 600.0,
        "burst": 50,
        "max_message_chars": 2000,
        "handoff_timeout_s": 86400.0,
        "staff_channel": None,
        "staff_chat_id": None,
        "session_ttl_s": 3600.0,
        "turn_timeout_s": 10.0,
        "max_tokens": 200,
    }
    values.update(overrides)
    return ConversationSettings(**values)


SUPERVISION = SupervisionSettings(
    max_restarts=5,
    period_s=60.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    reset_after_s=60.0,
)


@attrs.define(kw_only=True, eq=False)
class Harness:
    store: Store
    cache: SessionCache
    service: ConversationsService
    pool: ProviderPool
    router_send: trio.MemorySendChannel[Inbound]
    reports: trio.MemoryReceiveChannel[TurnCompleted]
    presence: PresenceBoard
    nudges: trio.MemoryReceiveChannel[OutboxNudge]
    _counter: int = 0

    async def accept(
        self,
        text: str,
        *,
        user: str = "u1",
        kind: InboundKind = InboundKind.TEXT,
        language_hint: str | None = None,
    ) -> Inbound:
        """Commit an inbox row as ingest does, without handing it to the router."""
        self._counter += 1
        message = InboundMessage(
            correlation_id=new_correlation_id(),
            channel=Channel.CONSOLE,
            user_key=f"console:{user}",
            chat_id=user,
            external_id=f"m{self._counter}",
            text=text,
            kind=kind,
            received_at=datetime.now(UTC),
            display_name=f"User {user}",
            language_hint=language_hint,
        )
        accepted = await self.store.accept(message)
        return Inbound(
            correlation_id=message.correlation_id,
            channel=message.channel,
            user_key=message.user_key,
            chat_id=message.chat_id,
            external_id=message.external_id,
            text=text,
            kind=kind,
            received_at=message.received_at,
            inbox_id=accepted.inbox_id,
            display_name=message.display_name,
            language_hint=language_hint,
        )

    async def send(self, text: str, **kwargs: Any) -> Inbound:
        """Commit and route a message, as ingest does."""
        inbound = await self.accept(text, **kwargs)
        await self.router_send.send(inbound)
        return inbound

    async def report(self, wait_s: float = WAIT_S) -> TurnCompleted:
        with trio.fail_after(wait_s):
            return await self.reports.receive()

    async def ask(self, text: str, **kwargs: Any) -> TurnCompleted:
        """Send and wait for this message's turn to complete."""
        inbound = await self.send(text, **kwargs)
        report = await self.report()
        assert report.inbox_id == inbound.inbox_id
        return report

    async def outbox(self, channel: Channel = Channel.CONSOLE) -> Sequence[OutboxRow]:
        return await self.store.pending_outbox(channel, limit=1000)

    async def replies_to(self, user: str) -> list[str]:
        return [row.text for row in await self.outbox() if row.chat_id == user]


class CrashOnce:
    """The real store, except that ``complete_turn`` raises once for a chosen correlation id.

    ``before_commit`` ids fail with nothing written; ``after_commit`` ids fail after the
    turn committed (the actor crashes with its row already answered).
    """

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.before_commit: set[str] = set()
        self.after_commit: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        if turn.correlation_id in self.before_commit:
            self.before_commit.discard(turn.correlation_id)
            await trio.lowlevel.checkpoint()
            raise RuntimeError("injected fault before the commit")
        ids = await self._inner.complete_turn(turn)
        if turn.correlation_id in self.after_commit:
            self.after_commit.discard(turn.correlation_id)
            raise RuntimeError("injected fault after the commit")
        return ids


@asynccontextmanager
async def running_concierge(
    tmp_path: Path,
    *,
    adapters: Sequence[Adapter] | None = None,
    network: Sequence[ProviderSettings] | None = None,
    knowledge: KnowledgeBase | None = None,
    wrap_store: Callable[[Store], Store] | None = None,
    wrap_cache: Callable[[SessionCache], SessionCache] | None = None,
    supervision: SupervisionSettings = SUPERVISION,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """The conversations subtree and a provider pool, running; stopped on exit.

    ``wrap_store`` / ``wrap_cache`` may put a fault-injecting proxy around the real ones.
    ``network`` gives the network providers' settings (default: one key each, no budget).
    As the daemon does, the day's token usage is read back from the store at start.
    """
    from concierge.store import open_session_cache

    knowledge = knowledge or shipped.knowledge()
    languages = shipped.languages()
    if adapters is None:
        adapters = [OfflineAdapter(knowledge, languages)]
    if network is None:
        network = [provider_settings(a.name, kind=a.kind) for a in adapters if a.kind != "offline"]
    settings = conversation_settings(**overrides)
    pool = ProviderPool(
        adapters=adapters, settings=pool_settings(*network, turn_timeout_s=settings.turn_timeout_s)
    )
    async with (
        open_store(store_settings(data_dir=tmp_path)) as real_store,
        open_session_cache(store_settings(data_dir=tmp_path)) as real_cache,
    ):
        the_store = wrap_store(real_store) if wrap_store is not None else real_store
        usage = await real_store.usage_on(utc_today())
        pool.restore_usage(usage)
        cache = wrap_cache(real_cache) if wrap_cache is not None else real_cache
        router_send, router_receive = trio.open_memory_channel[Inbound](64)
        pool_send, pool_receive = trio.open_memory_channel[CompletionRequest](64)
        reports_send, reports_receive = trio.open_memory_channel[TurnCompleted](256)
        presence = PresenceBoard()
        nudge_send, nudge_receive = trio.open_memory_channel[OutboxNudge](256)
        service = build_conversations(
            settings=settings,
            supervision=supervision,
            store=the_store,
            cache=cache,
            languages=languages,
            knowledge=knowledge,
            pool_inbox=pool_send,
            router_inbox=router_receive,
            router_send=router_send,
            outbox_nudges={Channel.CONSOLE: nudge_send},
            presence={Channel.CONSOLE: presence},
            turn_reports=reports_send,
            replay_interval_s=3600.0,
            usage=usage,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(pool.run, inbox=pool_receive))
            await nursery.start(service.supervisor.run)
            yield Harness(
                store=the_store,
                cache=cache,
                service=service,
                pool=pool,
                router_send=router_send,
                reports=reports_receive,
                presence=presence,
                nudges=nudge_receive,
            )
            nursery.cancel_scope.cancel()
