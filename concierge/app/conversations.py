"""Build the conversations subtree: conversation actors, router, staff desk, inbox replay, sweeper.

The composition root calls ``build_conversations`` once and plugs
``service.supervisor.run`` into the root supervisor; ``service`` (and
``service.router``) feed ``/health`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TypedDict

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, Metric

from actors import (
    STAFF_QUEUE,
    ConversationDeps,
    ConversationMetrics,
    PresenceBoard,
    RouterStats,
    TurnGate,
    run_conversation,
    run_erasure_watch,
    run_handoff_sweeper,
    run_inbox_listener,
    run_inbox_replay,
    run_router,
    run_staff_desk,
    wake_conversation,
)
from concierge.app.replicas import Replicas
from concierge.domain import (
    Admission,
    Desk,
    KnowledgeBase,
    Languages,
    Linking,
    OpenHandoffs,
    People,
    PromptBook,
    StaffChat,
    TriageRules,
    UserBudget,
    UserRateLimiter,
    load_community,
    load_triage,
)
from concierge.observability import Check
from concierge.protocol import (
    Channel,
    ConversationMsg,
    DailyUsage,
    OutboxMsg,
    ProviderPoolMsg,
    RouterMsg,
    StaffDeskMsg,
    TurnCompleted,
)
from concierge.settings import ConversationSettings, SupervisionSettings
from concierge.store import SessionCache, Store
from supervisors import Backoff, ChildSpec, KeyedSupervisor, Restart, Strategy, Supervisor


@attrs.frozen(kw_only=True, eq=False)
class ConversationsService:
    """What the composition root needs from the conversations subtree.

    ``supervisor`` goes into the root supervisor (``ChildSpec(start=service.supervisor.run)``);
    the service itself is an ``Observable`` (router counters plus turn counters). ``desk``
    is the staff desk's logic, shared with the operator API.
    """

    supervisor: Supervisor
    conversations: KeyedSupervisor[trio.MemorySendChannel[ConversationMsg]]
    router: RouterStats
    turn_metrics: ConversationMetrics
    budget: UserBudget
    limiter: UserRateLimiter
    triage: TriageRules
    prompts: PromptBook
    open_handoffs: OpenHandoffs
    desk: Desk

    def statistics(self) -> dict[str, object]:
        m = self.turn_metrics
        return {
            **self.router.statistics(),
            "turns": dict(m.turns),
            "provider_failures": m.provider_failures,
            "rate_limited": m.rate_limited,
            "too_long": m.too_long,
            "handoffs_opened": m.handoffs_opened,
            "urgent_handoffs": dict(m.urgent_handoffs),
            "handoffs_open": self.open_handoffs.open,
            "urgent_handoffs_open": self.open_handoffs.urgent,
            "silent_in_handoff": m.silent_in_handoff,
            "replies_withheld": m.replies_withheld,
            "small_talk": m.small_talk,
            "over_budget": m.over_budget,
            "reaped": m.reaped,
            "turns_abandoned": m.turns_abandoned,
        }

    def health_checks(self) -> Iterable[Check]:
        yield from self.router.health_checks()
        yield from self.budget.health_checks()
        yield from self.open_handoffs.health_checks()

    def metrics(self) -> Iterable[Metric]:
        yield from self.router.metrics()
        yield from self.budget.metrics()
        yield from self.open_handoffs.metrics()
        m = self.turn_metrics
        turns = CounterMetricFamily(
            "concierge_turns", "Turns completed, by service type", labels=["service_type"]
        )
        for service_type, count in sorted(m.turns.items()):
            turns.add_metric([service_type], count)
        yield turns
        refused = CounterMetricFamily(
            "concierge_turns_refused", "Messages answered without a provider", labels=["reason"]
        )
        refused.add_metric(["rate_limited"], m.rate_limited)
        refused.add_metric(["too_long"], m.too_long)
        refused.add_metric(["media"], m.media_refused)
        refused.add_metric(["in_handoff"], m.silent_in_handoff)
        refused.add_metric(["small_talk"], m.small_talk)
        refused.add_metric(["over_budget"], m.over_budget)
        yield refused
        yield CounterMetricFamily(
            "concierge_turn_provider_failures",
            "Turns no provider could answer",
            value=m.provider_failures,
        )
        yield CounterMetricFamily(
            "concierge_replies_withheld",
            "Replies withheld because they echoed the prompt",
            value=m.replies_withheld,
        )
        yield CounterMetricFamily(
            "concierge_turns_abandoned",
            "Messages given up after crashing their conversation repeatedly",
            value=m.turns_abandoned,
        )
        yield CounterMetricFamily(
            "concierge_handoffs_opened", "Handoffs to a person opened", value=m.handoffs_opened
        )
        urgent = CounterMetricFamily(
            "concierge_urgent_handoffs",
            "Handoffs opened or made urgent (a person in distress), by what raised the alarm",
            labels=["source"],
        )
        for source in ("rules", "provider"):
            urgent.add_metric([source], m.urgent_handoffs.get(source, 0))
        yield urgent


def build_conversations(
    *,
    settings: ConversationSettings,
    supervision: SupervisionSettings,
    store: Store,
    cache: SessionCache,
    languages: Languages,
    knowledge: KnowledgeBase,
    pool_inbox: trio.MemorySendChannel[ProviderPoolMsg],
    router_inbox: trio.MemoryReceiveChannel[RouterMsg],
    router_send: trio.MemorySendChannel[RouterMsg],
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]],
    presence: Mapping[Channel, PresenceBoard],
    turn_reports: trio.MemorySendChannel[TurnCompleted] | None = None,
    max_conversations: int | None = None,
    replay_interval_s: float = 30.0,
    replay_grace_s: float | None = None,
    handoff_sweep_s: float | None = None,
    usage: DailyUsage | None = None,
    erasure_poll_s: float = 2.0,
    people: People | None = None,
    gate: TurnGate | None = None,
    replicas: Replicas | None = None,
    admission: Admission | None = None,
) -> ConversationsService:
    """Wire the subtree; raises a ``ConfigError`` naming a missing or invalid file (triage
    rules, prompts, the community's numbers).

    ``router_send`` is the router inbox's send side, used by the inbox replayer. The
    grace before a row counts as stuck defaults to the time a full queue takes to drain.
    ``usage`` is what the store counted today: people keep what they spent before a restart.
    ``people`` says which identities are one person (shared with the operator API).
    ``gate`` is the daemon's turn gate, which its drain closes; ``admission`` bounds the
    turns in flight by what the process keeps up with.
    """
    triage = load_triage(settings.config_dir / "triage.toml", languages)
    prompts = PromptBook.load(settings.config_dir / "prompts", languages)
    community = load_community(settings.config_dir / "community.toml", languages)
    limiter = UserRateLimiter(cache=cache, rate_per_min=settings.rate_per_min, burst=settings.burst)
    deps = ConversationDeps(
        settings=settings,
        store=store,
        cache=cache,
        languages=languages,
        knowledge=knowledge,
        triage=triage,
        distress=languages.distress(),
        community=community,
        prompts=prompts,
        limiter=limiter,
        pool_inbox=pool_inbox,
        outbox_nudges=outbox_nudges,
        presence=presence,
        turn_reports=turn_reports,
        people=People() if people is None else people,
        linking=Linking(store=store),
        gate=TurnGate() if gate is None else gate,
        leases=replicas.leases if replicas is not None else None,
        admission=admission,
    )
    if usage is not None:
        deps.budget.restore(usage)
    staff = StaffChat.of(settings)
    desk = Desk(
        store=store,
        languages=languages,
        outbox_nudges=outbox_nudges,
        staff=staff,
        persons=deps.persons,
    )
    supervisor, conversations, stats = _subtree(
        deps,
        supervision,
        desk=desk,
        staff=staff,
        store=store,
        router_inbox=router_inbox,
        router_send=router_send,
        max_conversations=max_conversations,
        replay_interval_s=replay_interval_s,
        replay_grace_s=_replay_grace_s(settings) if replay_grace_s is None else replay_grace_s,
        handoff_sweep_s=_sweep_s(settings) if handoff_sweep_s is None else handoff_sweep_s,
        erasure_poll_s=erasure_poll_s,
        replicas=replicas if replicas is not None else Replicas(shared=None),
    )
    return ConversationsService(
        supervisor=supervisor,
        conversations=conversations,
        router=stats,
        turn_metrics=deps.metrics,
        budget=deps.budget,
        limiter=limiter,
        triage=triage,
        prompts=prompts,
        open_handoffs=deps.open_handoffs,
        desk=desk,
    )


def _subtree(
    deps: ConversationDeps,
    supervision: SupervisionSettings,
    *,
    desk: Desk,
    staff: StaffChat | None,
    store: Store,
    router_inbox: trio.MemoryReceiveChannel[RouterMsg],
    router_send: trio.MemorySendChannel[RouterMsg],
    max_conversations: int | None,
    replay_interval_s: float,
    replay_grace_s: float,
    handoff_sweep_s: float,
    erasure_poll_s: float,
    replicas: Replicas,
) -> tuple[Supervisor, KeyedSupervisor[trio.MemorySendChannel[ConversationMsg]], RouterStats]:
    """The keyed conversation actors, then the router and the staff desk it hands staff
    messages to, then the workers beside them.

    ``rest_for_one``: a restarted keyed supervisor restarts the router that holds it.
    """
    intensity = _Intensity(
        max_restarts=supervision.max_restarts,
        period_s=supervision.period_s,
        backoff=Backoff(initial_s=supervision.backoff_initial_s, max_s=supervision.backoff_max_s),
        reset_after_s=supervision.reset_after_s,
    )
    conversations: KeyedSupervisor[trio.MemorySendChannel[ConversationMsg]] = KeyedSupervisor(
        name="conversations",
        start=partial(run_conversation, deps=deps),
        restart=Restart.TRANSIENT,
        shutdown_s=2.0,
        max_children=max_conversations,
        **intensity,
    )
    metrics = deps.metrics
    stats = RouterStats(live_actors=lambda: metrics.live)
    # Owned here, like the router's inbox: a restarted staff desk reads the same queue.
    staff_send, staff_receive = trio.open_memory_channel[StaffDeskMsg](STAFF_QUEUE)
    router = partial(
        run_router,
        inbox=router_inbox,
        conversations=conversations,
        store=store,
        outbox_nudges=deps.outbox_nudges,
        languages=deps.languages,
        stats=stats,
        queue_size=deps.settings.queue_size,
        staff_desk=staff_send,
        people=deps.people,
        leased=deps.leases is not None,
        admission=deps.admission,
    )
    staff_desk = partial(run_staff_desk, inbox=staff_receive, desk=desk)
    workers = _workers(
        deps,
        conversations=conversations,
        store=store,
        router_send=router_send,
        replay_interval_s=replay_interval_s,
        replay_grace_s=replay_grace_s,
        handoff_sweep_s=handoff_sweep_s,
        erasure_poll_s=erasure_poll_s,
        staff=staff,
        replicas=replicas,
    )
    supervisor = Supervisor(
        name="conversations_tree",
        children=[
            ChildSpec(id="conversations", start=conversations.run, shutdown_s=5.0),
            ChildSpec(id="router", start=router),
            ChildSpec(id="staff_desk", start=staff_desk),
            *workers,
        ],
        strategy=Strategy.REST_FOR_ONE,
        **intensity,
    )
    return supervisor, conversations, stats


def _workers(
    deps: ConversationDeps,
    *,
    conversations: KeyedSupervisor[trio.MemorySendChannel[ConversationMsg]],
    store: Store,
    router_send: trio.MemorySendChannel[RouterMsg],
    replay_interval_s: float,
    replay_grace_s: float,
    handoff_sweep_s: float,
    erasure_poll_s: float,
    staff: StaffChat | None,
    replicas: Replicas,
) -> list[ChildSpec]:
    """The inbox replayer, the erasure watch and the handoff sweeper (one among replicas),
    and with replicas the inbox listener."""
    replay = partial(
        run_inbox_replay,
        store=store,
        router=router_send,
        grace_s=replay_grace_s,
        interval_s=replay_interval_s,
        admission=deps.admission,
    )
    erasure_watch = partial(
        run_erasure_watch,
        store=store,
        cache=deps.cache,
        live=deps.live,
        interval_s=erasure_poll_s,
    )
    sweeper = partial(
        run_handoff_sweeper,
        store=store,
        languages=deps.languages,
        timeout_s=deps.settings.handoff_timeout_s,
        interval_s=handoff_sweep_s,
        outbox_nudges=deps.outbox_nudges,
        watch=deps.open_handoffs,
        staff=staff,
    )
    children = [
        ChildSpec(id="inbox_replay", start=replay),
        ChildSpec(id="erasure_watch", start=erasure_watch),
        ChildSpec(id="handoff_sweeper", start=replicas.elect("handoff_sweeper", sweeper)),
    ]
    if replicas.shared is not None:
        listener = partial(
            run_inbox_listener,
            sessions=replicas.shared,
            store=store,
            router=router_send,
            wake=partial(wake_conversation, conversations, deps.people),
            people=deps.persons,
        )
        children.append(ChildSpec(id="inbox_listener", start=listener))
    return children


class _Intensity(TypedDict):
    """Restart intensity and backoff: the same for the subtree and for each actor."""

    max_restarts: int
    period_s: float
    backoff: Backoff
    reset_after_s: float


def _replay_grace_s(settings: ConversationSettings) -> float:
    """How old an unprocessed row must be to count as stuck: the time a full queue takes."""
    return settings.turn_timeout_s * (settings.queue_size + 2)


def _sweep_s(settings: ConversationSettings) -> float:
    """How often to look for timed-out handoffs: a tenth of the timeout, at most a minute."""
    return min(60.0, settings.handoff_timeout_s / 10)
