"""10,000 users writing at once: time until every one is answered, and memory per conversation actor.

A fake provider answers every call after a fixed delay (1 s by default), so the
figure to read is the time to answer all *beyond* that delay: the daemon's own
cost (ingest into the durable inbox, routing, one actor per user, store writes).
The store is the embedded SQLite file (in a temporary directory) by default, or
PostgreSQL with ``--store postgres`` (a fresh database made for the run on the
``--database-url`` server, dropped at the end); the session cache is the in-memory one.

Two measurements, printed (no asserts):

1. burst: ``--users`` messages accepted concurrently through ``Ingest`` as webhooks
   would; time to the last ``TurnCompleted``; peak RSS (VmHWM);
2. idle actors: RSS before and after starting ``--actors`` conversation actors
   that wait for messages, divided by the number started.

Garbage collection follows the daemon's policy (``concierge.collector``) unless
``--gc-threshold`` says otherwise, and the process logs as the daemon does by
default (JSON lines at info, secrets masked) into ``--log-file`` or nowhere.

Run: ``python bench/bench_conversations.py [--users 10000] [--delay 1.0] [--actors 10000]
[--store sqlite|postgres|memory] [--gc-threshold 700,10,10]``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import structlog
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch_store import bench_store_settings, scratch_store  # this folder: run as a script

from actors import PresenceBoard, ProviderPool
from concierge.app.conversations import ConversationsService, build_conversations
from concierge.app.gc_policy import run_collector, tune_gc
from concierge.domain import Ingest, load_knowledge, load_languages
from concierge.observability import configure_logging
from concierge.protocol import (
    Accepted,
    AcceptStatus,
    Channel,
    CompletionRequest,
    ConversationRow,
    ConversationStart,
    Inbound,
    InboundMessage,
    OutboundReply,
    OutboxNudge,
    ProviderCall,
    ProviderReply,
    Role,
    ServiceType,
    Turn,
    TurnCompleted,
    TurnRecord,
    new_correlation_id,
    utcnow,
)
from concierge.settings import (
    DEFAULT_CONFIG_DIR,
    ApiKey,
    BreakerSettings,
    ConversationSettings,
    PoolSettings,
    ProviderSettings,
    StoreSettings,
    SupervisionSettings,
)
from concierge.store import Store, open_session_cache

ROOT = Path(__file__).resolve().parent.parent


class DelayAdapter:
    """A provider that answers every call after ``delay_s``."""

    name = "fake"
    kind = "openai"
    model = "fake-1s"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        self.calls += 1
        await trio.sleep(self.delay_s)
        return ProviderReply(text=f"Réponse à : {call.query}", model=self.model)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class MemoryStore:
    """Just enough of ``Store`` in process memory, to show the actors' own cost without SQLite.

    Not durable and not part of the daemon: a measuring device for ``--store memory``.
    """

    backend = "memory (bench only)"

    def __init__(self) -> None:
        self.inbox: dict[int, Inbound] = {}
        self.processed: set[int] = set()
        self.unprocessed: dict[str, dict[int, None]] = {}
        self.by_external: dict[tuple[str, str], int] = {}
        self.outbox: list[OutboundReply] = []
        self.users: dict[str, int] = {}
        self.conversations: dict[int, ConversationRow] = {}
        self.messages: dict[int, list[Turn]] = {}
        self.interactions = 0

    async def accept(self, message: InboundMessage) -> Accepted:
        await trio.lowlevel.checkpoint()
        key = (message.channel.value, message.external_id)
        if key in self.by_external:
            return Accepted(status=AcceptStatus.DUPLICATE, inbox_id=self.by_external[key])
        inbox_id = len(self.inbox) + 1
        self.by_external[key] = inbox_id
        self.inbox[inbox_id] = Inbound.committed(message, inbox_id=inbox_id)
        self.unprocessed.setdefault(message.user_key, {})[inbox_id] = None
        return Accepted(status=AcceptStatus.NEW, inbox_id=inbox_id)

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> list[Inbound]:
        await trio.lowlevel.checkpoint()
        if user_key is None:
            ids = sorted(i for pending in self.unprocessed.values() for i in pending)
        else:
            ids = list(self.unprocessed.get(user_key, {}))
        return [self.inbox[i] for i in ids[:limit]]

    async def mark_processed(self, inbox_id: int) -> None:
        await trio.lowlevel.checkpoint()
        self.processed.add(inbox_id)
        self.unprocessed.get(self.inbox[inbox_id].user_key, {}).pop(inbox_id, None)

    async def enqueue_reply(self, reply: OutboundReply) -> int:
        await trio.lowlevel.checkpoint()
        self.outbox.append(reply)
        return len(self.outbox)

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        await trio.lowlevel.checkpoint()
        if turn.inbox_id in self.processed:
            return ()
        self.processed.add(turn.inbox_id)
        self.unprocessed.get(self.inbox[turn.inbox_id].user_key, {}).pop(turn.inbox_id, None)
        if turn.conversation_id is not None:
            for role, text in (
                (Role.USER, turn.inbound_text),
                (Role.ASSISTANT, turn.outbound_text),
            ):
                if text is not None:
                    self.messages.setdefault(turn.conversation_id, []).append(
                        Turn(role=role, text=text)
                    )
        self.interactions += turn.interaction is not None
        self.outbox.extend(turn.replies)
        return tuple(range(len(self.outbox) - len(turn.replies) + 1, len(self.outbox) + 1))

    async def resolve_user(
        self, channel: Channel, user_key: str, *, display_name: str | None = None
    ) -> int:
        await trio.lowlevel.checkpoint()
        return self.users.setdefault(user_key, len(self.users) + 1)

    async def conversation_for(self, user_id: int) -> ConversationRow:
        await trio.lowlevel.checkpoint()
        return self._conversation(user_id)

    def _conversation(self, user_id: int) -> ConversationRow:
        return self.conversations.setdefault(
            user_id,
            ConversationRow(
                conversation_id=user_id,
                user_id=user_id,
                service_type=ServiceType.RENSEIGNEMENT,
                handoff_open=False,
                updated_at=utcnow(),
            ),
        )

    async def open_conversation(
        self,
        channel: Channel,
        user_key: str,
        *,
        display_name: str | None = None,
        pending_limit: int,
        recent_limit: int,
    ) -> ConversationStart:
        await trio.lowlevel.checkpoint()
        user_id = self.users.setdefault(user_key, len(self.users) + 1)
        row = self._conversation(user_id)
        pending = list(self.unprocessed.get(user_key, {}))[:pending_limit]
        recent = self.messages.get(row.conversation_id, [])[-recent_limit:] if recent_limit else []
        return ConversationStart(
            user_id=user_id,
            conversation=row,
            handoff=None,
            pending=tuple(self.inbox[i] for i in pending),
            recent=tuple(recent),
        )

    async def recent_turns(self, conversation_id: int, *, limit: int) -> list[Turn]:
        await trio.lowlevel.checkpoint()
        return self.messages.get(conversation_id, [])[-limit:]

    async def active_handoff(self, conversation_id: int) -> None:
        await trio.lowlevel.checkpoint()

    async def handoffs_opened_before(self, cutoff: object) -> list[object]:
        await trio.lowlevel.checkpoint()
        return []


@asynccontextmanager
async def open_bench_store(
    kind: str, settings: StoreSettings, admin_dsn: str
) -> AsyncIterator[Store]:
    if kind == "memory":
        yield MemoryStore()  # type: ignore[misc]
        return
    async with scratch_store(kind, settings, admin_dsn) as store:
        yield store


def yardstick_s() -> float:
    """Seconds for a fixed pure-Python loop: how fast this machine's CPU is right now.

    Shared machines vary by half or more from hour to hour; a figure is only
    comparable with others taken at a similar yardstick.
    """
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _settings(users: int, turn_timeout_s: float) -> tuple[ConversationSettings, PoolSettings]:
    conversation = ConversationSettings(
        config_dir=DEFAULT_CONFIG_DIR,
        idle_s=3600.0,
        queue_size=4,
        context_turns=12,
        context_chars=6000,
        rate_per_min=60.0,
        burst=5,
        max_message_chars=2000,
        handoff_timeout_s=86400.0,
        staff_channel=None,
        staff_chat_id=None,
        session_ttl_s=3600.0,
        turn_timeout_s=turn_timeout_s,
        max_tokens=200,
    )
    provider = ProviderSettings(
        name="fake",
        kind="openai",
        model="fake-1s",
        base_url="http://127.0.0.1:9",
        keys=(ApiKey(alias="k1", secret="x"),),
        timeout_s=turn_timeout_s,
    )
    pool = PoolSettings(
        providers=(provider,),
        turn_timeout_s=turn_timeout_s,
        attempt_timeout_s=turn_timeout_s,
        max_attempts=1,
        max_tokens=200,
        breaker=BreakerSettings(
            window=20,
            min_calls=users + 1,
            failure_rate=0.99,
            consecutive=users + 1,
            open_s=30.0,
            open_max_s=300.0,
        ),
        credit_poll_s=300.0,
    )
    return conversation, pool


async def _run(
    users: int,
    delay_s: float,
    actors: int,
    data_dir: str | None,
    store_kind: str,
    admin_dsn: str,
    pool_size: int,
) -> None:
    turn_timeout_s = 120.0
    conversation, pool_settings = _settings(users, turn_timeout_s)
    supervision = SupervisionSettings(
        max_restarts=5, period_s=60.0, backoff_initial_s=0.1, backoff_max_s=1.0, reset_after_s=60.0
    )
    languages = load_languages(DEFAULT_CONFIG_DIR / "languages")
    knowledge = load_knowledge(DEFAULT_CONFIG_DIR, languages.analyzer())
    adapter = DelayAdapter(delay_s)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        store_settings = bench_store_settings(Path(tmp), pool_size=pool_size)
        async with (
            open_bench_store(store_kind, store_settings, admin_dsn) as store,
            open_session_cache(store_settings) as cache,
        ):
            router_send, router_receive = trio.open_memory_channel[Inbound](1024)
            pool_send, pool_receive = trio.open_memory_channel[CompletionRequest](1024)
            reports_send, reports_receive = trio.open_memory_channel[TurnCompleted](users + 16)
            nudge_send, _nudge_receive = trio.open_memory_channel[OutboxNudge](16)
            service: ConversationsService = build_conversations(
                settings=conversation,
                supervision=supervision,
                store=store,
                cache=cache,
                languages=languages,
                knowledge=knowledge,
                pool_inbox=pool_send,
                router_inbox=router_receive,
                router_send=router_send,
                outbox_nudges={Channel.CONSOLE: nudge_send},
                presence={Channel.CONSOLE: PresenceBoard()},
                turn_reports=reports_send,
                replay_interval_s=3600.0,
            )
            pool = ProviderPool(adapters=[adapter], settings=pool_settings)
            ingest = Ingest(store=store, router=router_send, forward_timeout_s=60.0)
            async with trio.open_nursery() as nursery:
                await nursery.start(run_collector)
                await nursery.start(partial(pool.run, inbox=pool_receive))
                await nursery.start(service.supervisor.run)

                where = tmp if store_kind == "sqlite" else "a database made for this run"
                print(f"store: {store.backend} (in {where}), session cache: {cache.backend}")

                await _idle_actors(service, actors)
                await _burst(service, ingest, reports_receive, users=users, adapter=adapter)
                nursery.cancel_scope.cancel()


async def _idle_actors(service: ConversationsService, actors: int) -> None:
    """RSS before and after starting ``actors`` actors that wait for messages, on fresh memory."""
    gc.collect()
    rss_idle_before = rss_kib()
    for i in range(actors):
        await service.conversations.start_child(f"idle{i}", f"console:idle{i}")
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    rss_idle_after = rss_kib()
    started = service.turn_metrics.live
    print(f"idle actors: {started} conversation actors started, waiting for messages")
    print(
        f"  RSS {rss_idle_before / 1024:.1f} MiB -> {rss_idle_after / 1024:.1f} MiB: "
        f"{(rss_idle_after - rss_idle_before) / max(started, 1):.1f} KiB per live actor"
    )
    for i in range(actors):
        await service.conversations.stop_child(f"idle{i}")


async def _burst(
    service: ConversationsService,
    ingest: Ingest,
    reports: trio.MemoryReceiveChannel[TurnCompleted],
    *,
    users: int,
    adapter: DelayAdapter,
) -> None:
    """``users`` messages accepted at once; time until the last turn completed, and memory."""
    gc.collect()
    rss_before = rss_kib()
    cpu_start = time.process_time()
    start = time.perf_counter()
    accepted_at: list[float] = []

    async def one(i: int) -> None:
        await ingest.accept(
            InboundMessage(
                correlation_id=new_correlation_id(),
                channel=Channel.CONSOLE,
                user_key=f"console:bench{i}",
                chat_id=f"bench{i}",
                external_id=f"b{i}",
                text="A quelle heure est la messe dimanche ?",
                received_at=utcnow(),
            )
        )
        accepted_at.append(time.perf_counter())

    providers: dict[str, int] = {}
    peak_live = 0
    async with trio.open_nursery() as senders:
        for i in range(users):
            senders.start_soon(one, i)
        for _ in range(users):
            report = await reports.receive()
            providers[report.provider] = providers.get(report.provider, 0) + 1
            peak_live = max(peak_live, service.turn_metrics.live)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    all_accepted = max(accepted_at) - start
    rss_live = rss_kib()
    live = service.turn_metrics.live
    delay_s = adapter.delay_s
    print(f"burst: {users} users, each sending one message at once through Ingest.accept")
    print(f"  provider: in-process fake answering after {delay_s:g} s; calls: {adapter.calls}")
    print(f"  all accepted into the inbox after   {all_accepted:7.2f} s")
    print(
        f"  all answered after                  {elapsed:7.2f} s "
        f"({elapsed - delay_s:.2f} s beyond the provider's {delay_s:g} s)"
    )
    print(f"  CPU time of the process meanwhile   {cpu:7.2f} s")
    print(f"  answers by provider: {providers}; busy replies: {service.router.busy_replies}")
    print(f"  live conversation actors at the end: {live} (peak seen {peak_live})")
    print(
        f"  RSS before {rss_before / 1024:.1f} MiB, with {live} live actors "
        f"{rss_live / 1024:.1f} MiB, peak (VmHWM) {rss_kib('VmHWM') / 1024:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--delay", type=float, default=1.0, help="seconds the fake provider takes per answer"
    )
    parser.add_argument(
        "--actors", type=int, default=10_000, help="idle actors started for the memory figure"
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres", "memory"),
        default="sqlite",
        help="sqlite (the daemon's default), postgres, or an in-process stand-in that shows "
        "the actors' own cost",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="for --store postgres: a server where the bench may create (and drop) a database",
    )
    parser.add_argument(
        "--pool-size", type=int, default=5, help="PostgreSQL connections (--store postgres)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the SQLite file goes (default: the system temp dir)"
    )
    parser.add_argument(
        "--gc-threshold",
        default=None,
        help="gc.set_threshold values instead of the daemon's policy, e.g. 700,10,10 "
        "(Python's own); default: the daemon's (concierge.collector)",
    )
    parser.add_argument(
        "--log-level",
        choices=("off", "debug", "info", "warning", "error"),
        default="info",
        help="the daemon's logging at this level (its default: info), or off",
    )
    parser.add_argument(
        "--log-file", default=None, help="where the log lines go (default: nowhere)"
    )
    args = parser.parse_args()
    if args.gc_threshold:
        gc.freeze()
        gc.set_threshold(*(int(v) for v in args.gc_threshold.split(",")))
        print(f"gc thresholds: {gc.get_threshold()} (after gc.freeze())")
    else:
        tune_gc()
        print(f"gc: the daemon's policy, thresholds {gc.get_threshold()} and a timer")
    if args.log_level == "off":
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
            cache_logger_on_first_use=True,
        )
    else:  # as the daemon logs: JSON lines, secrets masked, here into a file (or nowhere)
        sink = open(args.log_file, "w") if args.log_file else open(os.devnull, "w")  # noqa: SIM115
        configure_logging(
            level=args.log_level, fmt="json", secrets=["x"], stream=sink, cache_loggers=True
        )
    print(f"yardstick: a 10-million-step Python loop takes {yardstick_s():.2f} s on this CPU now")
    trio.run(
        _run,
        args.users,
        args.delay,
        args.actors,
        args.data_dir,
        args.store,
        args.database_url,
        args.pool_size,
    )


if __name__ == "__main__":
    main()
