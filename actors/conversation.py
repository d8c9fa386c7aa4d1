"""One user's conversation: their messages one at a time, in order, from inbox row to outbox row.

Each turn first looks for distress (a person in danger now: the rules of the
language files, no provider involved); such a message gets the emergency reply with
the community's numbers and goes to a person, flagged urgent, whatever else holds
(a rate limit, an open handoff that was not urgent). Then it checks an open handoff,
limits and commands, answers greetings and small talk with a fixed text, triages the
message, builds the prompt from the context window and the knowledge base, and asks
the provider pool, whose reply may raise the alarm too (the urgent marker); what it decided (replies, messages, interaction, service type)
is then written with the inbox row's mark in one ``Turns.complete_turn``, so a
crash leaves the row either answered or pending, never answered and pending.
The actor ends after ``idle_s`` without messages; its context stays in the
session cache and the store, so the next message starts a fresh actor that
picks up where this one stopped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Protocol

import attrs
import structlog
import trio

from actors import linking
from actors.handover import Handover
from actors.leases import ConversationLeases, Lease
from actors.presence import PresenceBoard
from actors.provider_pool import ask
from actors.turn_gate import TurnGate
from concierge.domain import (
    Admission,
    Command,
    Community,
    ContextWindow,
    Distress,
    DistressKind,
    DistressRules,
    KnowledgeBase,
    Languages,
    Linking,
    LivePersons,
    OpenHandoffs,
    ParsedCommand,
    People,
    Prompt,
    PromptBook,
    Reply,
    Tenure,
    TriageRules,
    UserBudget,
    UserRateLimiter,
    code_in,
    nudge_outbox,
    offer,
    parse_command,
    read_judgement,
    staff_forward,
    staff_notice,
)
from concierge.protocol import (
    Channel,
    Completion,
    CompletionFailed,
    ConversationMsg,
    ConversationRow,
    HandoffRow,
    Inbound,
    InboundKind,
    Interaction,
    OutboundReply,
    OutboxMsg,
    ProviderCall,
    ProviderPoolMsg,
    Role,
    ServiceType,
    Turn,
    TurnCompleted,
    TurnEnded,
    TurnRecord,
    TurnStarted,
)
from concierge.settings import ConversationSettings
from concierge.store import (
    Conversations,
    Handoffs,
    Identities,
    Inbox,
    Persons,
    SessionCache,
    StaleLease,
    StoreError,
    Turns,
)

log = structlog.get_logger(__name__)


STAFF_NOTICE_TURNS = 5
"""Recorded messages a handoff notice quotes before the one that asked for a person."""

SEEN_MEMORY = 64
"""Inbox ids an actor remembers to drop replays of rows it already handled."""

MAX_TURN_ATTEMPTS = 3
"""Starts of one row that crashed its actor before it is given up with an apology."""

DISTRESS_REASON = "distress"
"""The reason of a handoff the distress rules opened."""
JUDGED_REASON = "distress_judged"
"""The reason of a handoff a provider's judgement opened (its reply carried the marker)."""


class TurnAttempts:
    """How often each inbox row was started, across restarts of its actor (bounded, in memory).

    A row that crashes its actor every time would otherwise be retried by every
    restart and every replay, and its user would never hear back.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._counts: OrderedDict[int, int] = OrderedDict()

    def begin(self, inbox_id: int) -> int:
        """Count one more start of ``inbox_id``; return which attempt this is."""
        count = self._counts.pop(inbox_id, 0) + 1
        self._counts[inbox_id] = count
        if len(self._counts) > self._capacity:
            self._counts.popitem(last=False)
        return count

    def done(self, inbox_id: int) -> None:
        self._counts.pop(inbox_id, None)


@attrs.define(kw_only=True)
class ConversationMetrics:
    """Counters shared by every conversation actor (one instance per daemon)."""

    live: int = 0
    reaped: int = 0
    turns: dict[str, int] = attrs.field(factory=dict)
    provider_failures: int = 0
    rate_limited: int = 0
    too_long: int = 0
    media_refused: int = 0
    small_talk: int = 0
    over_budget: int = 0
    handoffs_opened: int = 0
    urgent_handoffs: dict[str, int] = attrs.field(factory=dict)
    """Handoffs opened or made urgent, by what raised the alarm (``rules``, ``provider``)."""
    silent_in_handoff: int = 0
    replies_withheld: int = 0
    turns_abandoned: int = 0

    def count_turn(self, service_type: ServiceType) -> None:
        self.turns[service_type.value] = self.turns.get(service_type.value, 0) + 1

    def count_urgent(self, source: str) -> None:
        self.urgent_handoffs[source] = self.urgent_handoffs.get(source, 0) + 1


class ConversationStore(Inbox, Turns, Conversations, Handoffs, Persons, Identities, Protocol):
    """What a conversation actor reaches: its user's pending rows, its opening read and
    history, its turns, the handoffs it opens and checks, and its person's identities."""


@attrs.frozen(kw_only=True)
class ConversationDeps:
    """Everything a conversation actor needs; shared by all of them."""

    settings: ConversationSettings
    store: ConversationStore
    cache: SessionCache
    languages: Languages
    knowledge: KnowledgeBase
    triage: TriageRules
    distress: DistressRules
    community: Community
    prompts: PromptBook
    limiter: UserRateLimiter
    pool_inbox: trio.MemorySendChannel[ProviderPoolMsg]
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]]
    presence: Mapping[Channel, PresenceBoard]
    turn_reports: trio.MemorySendChannel[TurnCompleted] | None = None
    admission: Admission | None = None
    """Turns in flight: each handled row is released from it."""
    metrics: ConversationMetrics = attrs.field(factory=ConversationMetrics)
    open_handoffs: OpenHandoffs = attrs.field(factory=OpenHandoffs)
    knowledge_sections: int = 3
    attempts: TurnAttempts = attrs.field(factory=TurnAttempts)
    live: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    """The scope ending each running actor, by person key: erasure stops a forgotten user's."""
    people: People = attrs.field(factory=People)
    """Which person each identity is, and the actors that retire when that changes."""
    linking: Linking | None = None
    """Link codes (``/lier``); without it the commands answer with the help text."""
    gate: TurnGate = attrs.field(factory=TurnGate)
    """Closed by the daemon's drain: turns in flight finish, no new one starts."""
    leases: ConversationLeases | None = None
    """Several replicas (PostgreSQL): a person's turns run where their lease is held."""
    budget: UserBudget = attrs.field()
    window: ContextWindow = attrs.field()

    @budget.default
    def _budget(self) -> UserBudget:
        return UserBudget(self.settings.user_daily_tokens)

    @property
    def persons(self) -> LivePersons:
        """Links and unlinks while the conversations run."""
        return LivePersons(
            store=self.store,
            people=self.people,
            wait_s=self.succession_s,
            cache=self.cache,
            budget=self.budget,
        )

    @property
    def succession_s(self) -> float:
        """How long an actor waits for the ones it succeeds: a full queue's turns."""
        return self.settings.turn_timeout_s * (self.settings.queue_size + 2)

    @window.default
    def _window(self) -> ContextWindow:
        s = self.settings
        return ContextWindow(
            cache=self.cache,
            store=self.store,
            max_turns=s.context_turns,
            max_chars=s.context_chars,
            ttl_s=s.session_ttl_s,
        )


@attrs.frozen(kw_only=True)
class _Outcome:
    """What a turn decided, before anything of it is written."""

    reply: str
    """The answer to the user; ``""`` stays silent."""
    service_type: ServiceType
    provider: str = ""
    recorded: str | None = None
    """The user's text to record in the conversation (with the reply); ``None`` records nothing."""
    interaction: Interaction | None = None
    set_type: bool = False
    """Whether the conversation takes ``service_type`` from now on."""
    staff: OutboundReply | None = None
    """A notification to staff, written with the reply."""
    handoff_id: int | None = None
    others: tuple[OutboundReply, ...] = ()
    """Messages to the person's other identities (a link's confirmation), written with the reply."""
    remember: bool = False
    """Whether the exchange joins the context window once written."""


class Conversation:
    """The state of one user's actor between messages (kept small: there may be thousands)."""

    __slots__ = (
        "_deps",
        "_handoff_read",
        "_recorded",
        "_seen",
        "_seen_order",
        "conversation_id",
        "handoff_open",
        "language",
        "lease",
        "limited_noticed",
        "service_type",
        "user_id",
        "user_key",
    )

    def __init__(self, user_key: str, deps: ConversationDeps, lease: Lease | None = None) -> None:
        self.user_key = user_key
        """The person's key: an identity's, or ``person:<id>`` for a person on several channels."""
        self._deps = deps
        self.lease = lease
        """The lease every turn's commit carries (several replicas); ``None``: one process."""
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self.conversation_id: int | None = None
        self.user_id: int | None = None
        """The person (the store's user id), whose tokens count against their daily budget."""
        self.service_type: ServiceType | None = None
        self.language: str | None = None
        self.limited_noticed = False
        self.handoff_open = False
        self._handoff_read: tuple[HandoffRow | None] | None = None
        """The active handoff as the opening read it, until the first turn uses it."""
        self._recorded: tuple[Turn, ...] | None = None
        """The recent messages as the opening read them, until a turn writes or uses them."""

    async def open(
        self, channel: Channel, identity: str, display_name: str | None, *, pending_limit: int
    ) -> tuple[Inbound, ...]:
        """Read the user, conversation, handoff and history in one store call.

        Returns the unprocessed inbox rows of ``identity`` (at most ``pending_limit``).
        """
        deps = self._deps
        start = await deps.store.open_conversation(
            channel,
            identity,
            display_name=display_name,
            pending_limit=pending_limit,
            recent_limit=deps.window.history_limit,
        )
        self.bind(start.conversation)
        self._handoff_read = (start.handoff,)
        self._recorded = start.recent
        return start.pending

    def bind(self, row: ConversationRow) -> None:
        """Take the person's conversation (at the opening, or the merged one after a link)."""
        self.conversation_id = row.conversation_id
        self.user_id = row.user_id
        self.service_type = row.service_type
        self.handoff_open = row.handoff_open

    def unseen(self, inbox_id: int) -> bool:
        """Whether this actor has not handled ``inbox_id`` yet."""
        return inbox_id not in self._seen

    def _first_time(self, inbox_id: int) -> bool:
        if inbox_id in self._seen:
            return False
        self._seen.add(inbox_id)
        self._seen_order.append(inbox_id)
        if len(self._seen_order) > SEEN_MEMORY:
            self._seen.discard(self._seen_order.popleft())
        return True

    async def handle(self, msg: Inbound) -> None:
        """Process one inbox row exactly once per actor; its writes and its mark commit together."""
        try:
            await self._handle(msg)
        finally:
            if self._deps.admission is not None:
                self._deps.admission.release(msg.inbox_id)

    async def _handle(self, msg: Inbound) -> None:
        deps = self._deps
        if not self._first_time(msg.inbox_id):
            return
        with structlog.contextvars.bound_contextvars(
            correlation_id=msg.correlation_id, inbox_id=msg.inbox_id
        ):
            started = trio.current_time()
            if self.conversation_id is None:  # once per actor, not per message
                await self.open(msg.channel, msg.user_key, msg.display_name, pending_limit=0)
            attempt = deps.attempts.begin(msg.inbox_id)
            try:
                if attempt > MAX_TURN_ATTEMPTS:
                    outcome = self._abandon(msg, attempts=attempt - 1)
                else:
                    outcome = await self._turn(msg)
                await self._complete(msg, outcome)
            except StoreError:
                deps.attempts.done(msg.inbox_id)  # the store's outage, not the row's fault
                raise
            deps.attempts.done(msg.inbox_id)
            if outcome.remember:
                await deps.window.remember(self.user_key, msg.text, outcome.reply)
            deps.metrics.count_turn(outcome.service_type)
            latency_s = trio.current_time() - started
            log.info(
                "conversation.turn_completed",
                conversation_id=self.conversation_id,
                service_type=outcome.service_type.value,
                provider=outcome.provider,
                silent=not outcome.reply,
                latency_ms=round(latency_s * 1000),
            )
            offer(
                deps.turn_reports,
                TurnCompleted(
                    correlation_id=msg.correlation_id,
                    user_key=msg.user_key,
                    inbox_id=msg.inbox_id,
                    reply=outcome.reply,
                    service_type=outcome.service_type,
                    provider=outcome.provider,
                    latency_s=latency_s,
                ),
            )

    def _abandon(self, msg: Inbound, *, attempts: int) -> _Outcome:
        """Give up a row that crashed the actor ``attempts`` times: apologise, mark it, go on."""
        deps = self._deps
        deps.metrics.turns_abandoned += 1
        log.error(
            "conversation.turn_abandoned", conversation_id=self.conversation_id, attempts=attempts
        )
        language = self.language or deps.languages.detect(msg.text, hint=msg.language_hint)
        service_type = self.service_type or deps.triage.default
        if deps.distress.detect(msg.text) is not None:  # the numbers at least, if not a person
            reply = deps.community.distress_reply(deps.languages, language)
        else:
            reply = deps.languages.reply(Reply.PROVIDER_FAILED, language)
        return _Outcome(reply=reply, service_type=service_type)

    # -- one turn ------------------------------------------------------------------------
    async def _turn(self, msg: Inbound) -> _Outcome:
        deps = self._deps
        settings = deps.settings
        assert self.conversation_id is not None
        current = self.service_type or deps.triage.default
        self.language = language = deps.languages.detect(
            msg.text, previous=self.language, hint=msg.language_hint
        )
        distress = deps.distress.detect(msg.text)
        link = _link_request(msg.text) if distress is None and deps.linking else None
        if link is not None:  # before a handoff: a code must not be forwarded to the staff chat
            code, unlink = link
            return await self._linking(msg, language, current, code=code, unlink=unlink)

        handoff = await self._active_handoff()
        if handoff is not None and handoff.correlation_id == msg.correlation_id:
            # This very message opened it (or made it urgent) before a crash: finish that, once.
            alarm = _alarm(distress) if handoff.urgent else ()
            return await self._open_handoff(msg, language, reason=handoff.reason, alarm=alarm)
        if distress is not None and (handoff is None or not handoff.urgent):
            return await self._open_handoff(
                msg,
                language,
                reason=DISTRESS_REASON,
                alarm=distress.kinds,
                escalating=handoff is not None,
            )
        if handoff is not None:
            return self._in_handoff(msg, handoff)

        if not await deps.limiter.allow(self.user_key):
            deps.metrics.rate_limited += 1
            log.info(
                "conversation.rate_limited",
                conversation_id=self.conversation_id,
                noticed=self.limited_noticed,
            )
            notice = (
                "" if self.limited_noticed else deps.languages.reply(Reply.RATE_LIMITED, language)
            )
            self.limited_noticed = True
            return _Outcome(reply=notice, service_type=current, recorded=msg.text)
        self.limited_noticed = False

        if msg.kind is InboundKind.MEDIA:
            deps.metrics.media_refused += 1
            return self._fixed(
                msg, deps.languages.reply(Reply.MEDIA_UNSUPPORTED, language), current
            )

        if not msg.text.strip():  # nothing to answer (an empty caption, stray whitespace)
            return self._fixed(msg, deps.languages.reply(Reply.HELP, language), current)

        if len(msg.text) > settings.max_message_chars:
            deps.metrics.too_long += 1
            log.info(
                "conversation.message_refused",
                reason="too_long",
                length=len(msg.text),
                limit=settings.max_message_chars,
            )
            text = deps.languages.reply(
                Reply.TOO_LONG, language, length=len(msg.text), limit=settings.max_message_chars
            )
            recorded = msg.text[: settings.max_message_chars] + " […]"
            return _Outcome(reply=text, service_type=current, recorded=recorded)

        command = parse_command(msg.text)
        if command is not None:
            return await self._command(msg, command, language, current)

        small_talk = deps.languages.small_talk.classify(msg.text)
        if small_talk is not None:
            deps.metrics.small_talk += 1
            return self._fixed(msg, deps.languages.reply(small_talk.reply, language), current)

        decision = deps.triage.classify(msg.text, current=self.service_type)
        if decision.service_type is ServiceType.CONTACT_HUMAIN:
            return await self._open_handoff(msg, language, reason="triage")
        return await self._answer(msg, language, decision.service_type)

    def _in_handoff(self, msg: Inbound, handoff: HandoffRow) -> _Outcome:
        """Silent while staff have it: the message is recorded and forwarded to the staff chat."""
        deps = self._deps
        deps.metrics.silent_in_handoff += 1
        forward = staff_forward(
            settings=deps.settings,
            languages=deps.languages,
            handoff=handoff,
            who=msg.display_name or msg.user_key,
            text=msg.text,
            correlation_id=msg.correlation_id,
        )
        return _Outcome(
            reply="",
            service_type=ServiceType.CONTACT_HUMAIN,
            recorded=msg.text,
            staff=forward,
            handoff_id=handoff.handoff_id,
        )

    async def _command(
        self, msg: Inbound, command: ParsedCommand, language: str, current: ServiceType
    ) -> _Outcome:
        deps = self._deps
        match command.command:
            case Command.START:
                return self._fixed(msg, deps.languages.reply(Reply.WELCOME, language), current)
            case Command.RESET:
                await deps.window.clear(self.user_key)
                return self._fixed(msg, deps.languages.reply(Reply.RESET_DONE, language), current)
            case Command.HUMAN:
                return await self._open_handoff(msg, language, reason="command")
            case Command.LINK | Command.UNLINK:  # without linking (handled before otherwise)
                return self._fixed(msg, deps.languages.reply(Reply.HELP, language), current)
            case Command.HELP | Command.UNKNOWN:
                return self._fixed(msg, deps.languages.reply(Reply.HELP, language), current)

    async def _linking(
        self,
        msg: Inbound,
        language: str,
        current: ServiceType,
        *,
        code: str | None = None,
        unlink: bool = False,
    ) -> _Outcome:
        """Ask for a code, send one, or unlink; nothing of it joins the history (a code is
        a secret)."""
        deps = self._deps
        assert deps.linking is not None
        link = linking.LinkingDeps(
            linking=deps.linking, persons=deps.persons, languages=deps.languages
        )
        if unlink:
            done = await linking.unlink(link, msg, language)
        elif code is not None:
            done = await linking.redeem_code(link, msg, code, language, person=self.user_key)
        else:
            done = await linking.ask_code(link, msg, language)
        if done.rebind is not None:  # linked: this actor retires, writing as the merged person
            self.bind(done.rebind)
            self.user_key = deps.people.person_of(msg.user_key)
            self._recorded = self._handoff_read = None
        return _Outcome(reply=done.reply, service_type=current, others=done.others)

    async def _open_handoff(
        self,
        msg: Inbound,
        language: str,
        *,
        reason: str,
        alarm: tuple[DistressKind, ...] = (),
        escalating: bool = False,
    ) -> _Outcome:
        """Give the conversation to a person; with an ``alarm``, urgently, with the numbers.

        ``escalating`` makes the handoff already open urgent (the person wrote of distress
        while waiting). The log says that a handoff is urgent, never what was found: the
        kind of distress of an identifiable person is health data, and logs outlive
        retention and ``forget``; staff read it in their notice.
        """
        deps = self._deps
        assert self.conversation_id is not None
        urgent = bool(alarm)
        self.handoff_open = True
        handoff = await deps.store.open_handoff(
            conversation_id=self.conversation_id,
            user_key=msg.user_key,
            reason=reason,
            correlation_id=msg.correlation_id,
            urgent=urgent,
        )
        if not escalating:
            deps.metrics.handoffs_opened += 1
        log.info(
            "handoff.made_urgent" if escalating else "handoff.opened",
            handoff_id=handoff.handoff_id,
            conversation_id=self.conversation_id,
            reason=handoff.reason,
            urgent=handoff.urgent,
            channel=msg.channel.value,
        )
        # Staff replies reach the user without this actor: once the handoff ends, the
        # window is rebuilt from the recorded messages, theirs included.
        await deps.window.clear(self.user_key)
        recent = await deps.store.recent_turns(self.conversation_id, limit=STAFF_NOTICE_TURNS)
        staff = staff_notice(
            settings=deps.settings,
            languages=deps.languages,
            handoff=handoff,
            channel=msg.channel,
            who=msg.display_name or msg.user_key,
            recent=(*recent, Turn(role=Role.USER, text=msg.text)),
            distress=alarm,
        )
        if urgent:
            deps.metrics.count_urgent("provider" if DistressKind.JUDGED in alarm else "rules")
            deps.open_handoffs.poke()
            if staff is None:
                log.warning(
                    "handoff.urgent_unannounced",
                    handoff_id=handoff.handoff_id,
                    reason="no staff chat: set CONCIERGE_STAFF_CHANNEL and CONCIERGE_STAFF_CHAT_ID",
                )
        reply = (
            deps.community.distress_reply(deps.languages, language)
            if urgent
            else deps.languages.reply(Reply.HANDOFF_OPENED, language)
        )
        return _Outcome(
            reply=reply,
            service_type=ServiceType.CONTACT_HUMAIN,
            recorded=msg.text,
            set_type=True,
            handoff_id=handoff.handoff_id,
            staff=staff,
        )

    async def _answer(self, msg: Inbound, language: str, service_type: ServiceType) -> _Outcome:
        deps = self._deps
        assert self.conversation_id is not None
        recorded, self._recorded = self._recorded, None
        history = await deps.window.load(self.user_key, self.conversation_id, recorded=recorded)
        sections = deps.knowledge.best_sections(msg.text, limit=deps.knowledge_sections)
        prompt = deps.prompts.build(
            service_type=service_type,
            language=language,
            sections=sections,
            history=history,
            user_text=msg.text,
        )
        capped = self._over_budget()
        presence = deps.presence.get(msg.channel)
        if presence is not None:
            presence.post(TurnStarted.of(msg))
        try:
            result = await ask(
                deps.pool_inbox,
                ProviderCall(
                    correlation_id=msg.correlation_id,
                    system=prompt.system,
                    turns=prompt.turns,
                    max_tokens=deps.settings.max_tokens,
                    timeout_s=deps.settings.turn_timeout_s,
                    query=msg.text,
                    language=language,
                    service_type=service_type,
                ),
                network=not capped,
            )
            judged, clean = (
                read_judgement(result.text) if isinstance(result, Completion) else (False, "")
            )
            if judged:
                assert isinstance(result, Completion)
                return await self._judged_urgent(msg, language, result, service_type)
            text, provider, outcome = self._reply(result, clean, prompt, language, capped=capped)
            return _Outcome(
                reply=text,
                service_type=service_type,
                provider=provider,
                recorded=msg.text,
                interaction=Interaction.of(
                    result,
                    conversation_id=self.conversation_id,
                    outcome=outcome,
                    service_type=service_type,
                ),
                set_type=True,
                remember=outcome in ("ok", "capped"),
            )
        finally:
            if presence is not None:
                presence.post(TurnEnded.of(msg))

    async def _judged_urgent(
        self, msg: Inbound, language: str, result: Completion, service_type: ServiceType
    ) -> _Outcome:
        """A provider judged the message an emergency: the person gets the emergency reply
        and a person, urgently. The provider's own text (it carries the marker) is never sent."""
        self._spend(result)
        outcome = await self._open_handoff(
            msg, language, reason=JUDGED_REASON, alarm=(DistressKind.JUDGED,)
        )
        assert self.conversation_id is not None
        return attrs.evolve(
            outcome,
            provider=result.provider,
            interaction=Interaction.of(
                result,
                conversation_id=self.conversation_id,
                outcome="urgent",
                service_type=service_type,
            ),
        )

    def _spend(self, result: Completion) -> None:
        """Count an answer's tokens against its person's daily budget."""
        deps = self._deps
        if self.user_id is not None and deps.budget.spend(
            self.user_id, result.tokens_in + result.tokens_out
        ):
            log.info("conversation.budget_spent", conversation_id=self.conversation_id)

    def _over_budget(self) -> bool:
        """Whether this person has used their day's tokens: then no network provider is asked."""
        deps = self._deps
        if self.user_id is None or not deps.budget.exhausted(self.user_id):
            return False
        deps.metrics.over_budget += 1
        log.info(
            "conversation.over_budget",
            conversation_id=self.conversation_id,
            tokens=deps.budget.used(self.user_id),
            budget=deps.budget.tokens_per_day,
        )
        return True

    def _reply(
        self,
        result: Completion | CompletionFailed,
        clean: str,
        prompt: Prompt,
        language: str,
        *,
        capped: bool,
    ) -> tuple[str, str, str]:
        """The text to send, the provider that wrote it and the turn's outcome.

        ``clean`` is an answer's text without urgent markers: what may be sent. Whether
        it echoes the prompt is judged on the text as written (the instructions hold the
        marker). A person past their budget gets the knowledge base's answer (when there is an
        offline provider) and the notice; the tokens of any other answer count.
        """
        deps = self._deps
        notice = deps.languages.reply(Reply.BUDGET_EXHAUSTED, language)
        if isinstance(result, Completion) and prompt.leaked(result.text):
            deps.metrics.replies_withheld += 1
            log.warning(
                "conversation.reply_withheld", reason="prompt_echo", provider=result.provider
            )
            return (
                deps.languages.reply(Reply.PROVIDER_FAILED, language),
                result.provider,
                "withheld",
            )
        if isinstance(result, Completion) and capped:
            return f"{clean}\n\n{notice}", result.provider, "capped"
        if isinstance(result, Completion):
            self._spend(result)
            return clean, result.provider, "ok"
        if capped:
            return notice, "", "capped"
        deps.metrics.provider_failures += 1
        log.warning(
            "conversation.provider_failed", reason=result.reason, attempts=len(result.failures)
        )
        return deps.languages.reply(Reply.PROVIDER_FAILED, language), "", "failed"

    # -- helpers -------------------------------------------------------------------------
    def _fixed(self, msg: Inbound, text: str, service_type: ServiceType) -> _Outcome:
        """Answer with a fixed text, no provider involved."""
        return _Outcome(reply=text, service_type=service_type, recorded=msg.text)

    async def _complete(self, msg: Inbound, outcome: _Outcome) -> None:
        """Write the turn and mark its row in one store call, then nudge the senders.

        A row that a previous run of this actor completed (it crashed before the row
        left its queue) is left as it is: nothing is written or sent twice.
        """
        deps = self._deps
        replies: list[OutboundReply] = []
        if outcome.staff is not None:
            replies.append(outcome.staff)
        if outcome.reply:
            replies.append(OutboundReply.answering(msg, text=outcome.reply))
        replies.extend(outcome.others)
        retype = outcome.set_type and outcome.service_type is not self.service_type
        recorded = outcome.recorded
        # What the opening read is out of date once this turn is written.
        self._recorded = self._handoff_read = None
        ids = await deps.store.complete_turn(
            TurnRecord(
                inbox_id=msg.inbox_id,
                conversation_id=self.conversation_id,
                correlation_id=msg.correlation_id,
                service_type=outcome.service_type,
                inbound_text=recorded,
                outbound_text=(outcome.reply or None) if recorded is not None else None,
                replies=tuple(replies),
                interaction=outcome.interaction,
                conversation_type=outcome.service_type if retype else None,
                lease_key=self.lease.key if self.lease is not None else None,
                lease_epoch=self.lease.epoch if self.lease is not None else None,
            )
        )
        if outcome.set_type:
            self.service_type = outcome.service_type
        if not ids:
            if replies:
                log.info(
                    "conversation.turn_already_completed", conversation_id=self.conversation_id
                )
            return
        for channel in dict.fromkeys(r.channel for r in replies):
            nudge_outbox(deps.outbox_nudges, channel, msg.correlation_id)
        if outcome.staff is not None:
            log.info(
                "handoff.staff_notified",
                handoff_id=outcome.handoff_id,
                staff_channel=outcome.staff.channel.value,
            )

    async def _active_handoff(self) -> HandoffRow | None:
        """The handoff that makes a person own the conversation now, if any.

        Only this actor opens handoffs, so a closed one stays closed without asking the
        store; an open one is checked every time, since staff (or the sweeper) close it.
        """
        read, self._handoff_read = self._handoff_read, None
        if not self.handoff_open:
            return None
        assert self.conversation_id is not None
        if read is not None:  # the first turn: what opening the conversation just read
            (handoff,) = read
        else:
            handoff = await self._deps.store.active_handoff(self.conversation_id)
        self.handoff_open = handoff is not None
        return handoff


def _link_request(text: str) -> tuple[str | None, bool] | None:
    """``(code, unlink)`` when ``text`` asks for a code (``/lier``), sends one (the bare
    digits, or ``/lier 123456``) or unlinks (``/delier``); ``None`` otherwise."""
    code = code_in(text)
    if code is not None:
        return code, False
    command = parse_command(text)
    if command is None or command.command not in (Command.LINK, Command.UNLINK):
        return None
    return code_in(command.argument), command.command is Command.UNLINK


def _alarm(distress: Distress | None) -> tuple[DistressKind, ...]:
    """What made an urgent handoff urgent: the rules' kinds, else a provider's judgement."""
    return distress.kinds if distress is not None else (DistressKind.JUDGED,)


def _take_queued(receive: trio.MemoryReceiveChannel[ConversationMsg]) -> list[ConversationMsg]:
    queued: list[ConversationMsg] = []
    while True:
        try:
            queued.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return queued


async def _opening(
    conversation: Conversation,
    store: Inbox,
    receive: trio.MemoryReceiveChannel[ConversationMsg],
    handed: list[ConversationMsg],
    *,
    identities: tuple[str, ...],
    limit: int,
) -> list[Inbound]:
    """Open the conversation; return the person's unprocessed rows plus what was handed over.

    Deduped, in arrival order. Taking the queued copies out at once keeps a message
    that is both pending and queued from holding a queue slot (and causing "one
    moment" replies) meanwhile. The first message handed over names the channel and
    display name to open with (one store call); an actor started without one (a
    restart) finds its first pending row first. ``identities`` are the person's: the
    rows of those other than the first are read apart (a person on several channels).
    """
    inbound = [msg for msg in handed if isinstance(msg, Inbound)]
    first: Inbound | None = inbound[0] if inbound else None
    for identity in identities if first is None else ():
        rows = await store.pending_inbox(user_key=identity, limit=1)
        if rows:
            first = rows[0]
            break
    if first is None:  # nothing to replay: the first message opens the conversation
        return []
    pending = await conversation.open(
        first.channel, first.user_key, first.display_name, pending_limit=limit
    )
    for identity in identities:
        if identity != first.user_key:
            pending += tuple(await store.pending_inbox(user_key=identity, limit=limit))
    backlog = {row.inbox_id: row for row in pending}
    for msg in handed + _take_queued(receive):
        if isinstance(msg, Inbound):
            backlog.setdefault(msg.inbox_id, msg)
    return [backlog[inbox_id] for inbox_id in sorted(backlog)]


async def run_conversation(
    key: str,
    user_key: str,
    handover: Handover | None = None,
    *,
    deps: ConversationDeps,
    task_status: trio.TaskStatus[
        trio.MemorySendChannel[ConversationMsg]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one user until ``idle_s`` passes without a message.

    ``key`` is the supervisor's (pseudonymous) name for this actor, ``user_key`` the user.

    Takes the messages the router handed over and reports its inbox's send side
    through ``task_status.started`` in one step; then first replays this user's
    unprocessed inbox rows (what a crash left behind), then takes messages as they
    come. A restarted actor dedupes rows it sees twice.
    """
    deps.metrics.live += 1
    scope = deps.live[user_key] = trio.CancelScope()
    tenure = deps.people.enter(user_key)
    try:
        with scope:
            if deps.leases is None:
                await _serve(user_key, handover, deps, tenure, task_status)
            else:
                await _serve_leased(key, user_key, handover, deps, deps.leases, tenure, task_status)
        if scope.cancelled_caught:
            log.info("conversation.forgotten")
    finally:
        deps.metrics.live -= 1
        deps.people.leave(tenure)
        if deps.live.get(user_key) is scope:
            del deps.live[user_key]


async def _serve(
    user_key: str,
    handover: Handover | None,
    deps: ConversationDeps,
    tenure: Tenure,
    task_status: trio.TaskStatus[trio.MemorySendChannel[ConversationMsg]],
) -> None:
    # Not ``open_memory_channel[ConversationMsg](...)``: the subscripted call costs ~30 µs per actor.
    send: trio.MemorySendChannel[ConversationMsg]
    receive: trio.MemoryReceiveChannel[ConversationMsg]
    send, receive = trio.open_memory_channel(deps.settings.queue_size)
    conversation = Conversation(user_key, deps)
    with receive:
        handed = handover.take() if handover is not None else []
        task_status.started(send)  # no checkpoint since the take: nothing slips between
        if await _converse(conversation, receive, handed, deps, tenure):
            return
        # The drain closed the gate: what is still queued stays in the durable inbox.
        await deps.gate.set_aside(receive)


async def _converse(
    conversation: Conversation,
    receive: trio.MemoryReceiveChannel[ConversationMsg],
    handed: list[ConversationMsg],
    deps: ConversationDeps,
    tenure: Tenure,
) -> bool:
    """Handle messages until idle or retired (True), or until the turn gate closes (False)."""
    gate, user_key = deps.gate, conversation.user_key
    if gate.closed:
        return False
    if any(deps.people.person_of(k) != user_key for k in deps.people.identities(user_key)):
        tenure.retire()  # restarted after a link took its identities elsewhere: stand down
    # A link or an unlink gave this person a new key: the actors of the old ones first.
    await deps.people.wait_for_predecessors(user_key, timeout_s=deps.succession_s)
    for queued in await _opening(
        conversation,
        deps.store,
        receive,
        handed,
        identities=deps.people.identities(user_key),
        limit=deps.settings.queue_size * 8,
    ):
        if not await gate.turn(conversation.handle, queued):
            return False
    while not tenure.retiring:
        msg: ConversationMsg | None = None
        with trio.move_on_after(deps.settings.idle_s) as tenure.idle:
            try:
                msg = await receive.receive()
            except trio.EndOfChannel:
                return True
        tenure.idle = None
        if msg is None and not tenure.retiring:  # the idle timeout passed
            deps.metrics.reaped += 1
            log.debug("conversation.reaped", conversation_id=conversation.conversation_id)
            return True
        if isinstance(msg, Inbound) and not await gate.turn(conversation.handle, msg):
            return False
    # Retired (the person's key changed): what the router sent here before is answered here.
    for left in _take_queued(receive):
        if isinstance(left, Inbound) and not await gate.turn(conversation.handle, left):
            return False
    log.info("conversation.retired", conversation_id=conversation.conversation_id)
    return True


async def _serve_leased(
    key: str,
    user_key: str,
    handover: Handover | None,
    deps: ConversationDeps,
    leases: ConversationLeases,
    tenure: Tenure,
    task_status: trio.TaskStatus[trio.MemorySendChannel[ConversationMsg]],
) -> None:
    """Serve a person under their lease (several replicas on PostgreSQL).

    ``key`` (the router's key for the person) names the lease. Whatever arrives (a
    message accepted here, an ``InboxWake`` for one accepted elsewhere) only says
    "look": the person's pending rows, over all their identities, are read from the
    store and answered in inbox order, so messages delivered to different replicas keep
    their order. Without the lease (another replica holds it) the holder answers; this
    actor looks again twice per lease life while the person has rows waiting (a dead
    holder's lease expires and is taken over) and ends once none wait. A lease let go
    with rows pending wakes every replica.
    """
    send: trio.MemorySendChannel[ConversationMsg]
    receive: trio.MemoryReceiveChannel[ConversationMsg]
    send, receive = trio.open_memory_channel(deps.settings.queue_size)
    with receive:
        # The rows are in the store, which is read below; these only say "look".
        handed = handover.take() if handover is not None else []
        task_status.started(send)
        if any(deps.people.person_of(k) != user_key for k in deps.people.identities(user_key)):
            tenure.retire()  # restarted after a link took its identities elsewhere: stand down
        await deps.people.wait_for_predecessors(user_key, timeout_s=deps.succession_s)
        identities = deps.people.identities(user_key)
        # And those of other replicas, which learnt of the new key when this one did.
        if not tenure.retiring:
            await leases.wait_for_others(key, identities, timeout_s=deps.succession_s)
        # Whom to wake when the lease is let go with rows waiting: an identity's key.
        identity = identities[0]
        try:
            while not tenure.retiring and not deps.gate.closed:
                async with leases.holding(key, user_key=identity) as lease:
                    if lease is not None:
                        conversation = Conversation(user_key, deps, lease)
                        if await _serve_held(conversation, deps, leases, tenure, receive, handed):
                            return
                        break  # the drain closed the gate: the lease goes now, with a wake-up
                # Held elsewhere: its holder answers, so what was routed here is no turn of
                # this replica. Should it have died, its lease expires; while rows wait,
                # look again twice per lease life (messages queued meanwhile are in the
                # store too). Retiring (a link here) ends the wait at once.
                _looked(deps, handed + _take_queued(receive))
                handed = []
                with trio.move_on_after(leases.ttl_s / 2) as tenure.idle:
                    await trio.sleep_forever()
                tenure.idle = None
                if not await _pending(deps, user_key, limit=1):
                    return
            if deps.gate.closed:  # what is still queued stays in the durable inbox
                await deps.gate.set_aside(receive)
        finally:
            _looked(deps, handed + _take_queued(receive))


def _looked(deps: ConversationDeps, msgs: list[ConversationMsg]) -> None:
    """Release the admission of rows routed to a leased actor once it has looked at the store.

    Under a lease a routed row only says "look": the actor answers the person's rows
    read from the store, and another replica's holder may have answered this one. A
    row ``handle`` did not take here would otherwise count as in flight until it
    expires, and a replica full of such rows defers every new row with no turn to end.
    """
    if deps.admission is not None:
        for msg in msgs:
            if isinstance(msg, Inbound):
                deps.admission.release(msg.inbox_id)


async def _serve_held(
    conversation: Conversation,
    deps: ConversationDeps,
    leases: ConversationLeases,
    tenure: Tenure,
    receive: trio.MemoryReceiveChannel[ConversationMsg],
    handed: list[ConversationMsg],
) -> bool:
    """Answer the person while the lease holds: True when done (idle, retired, lease lost),
    False when the turn gate closed. The rows that said "look" are released once looked."""
    lease = conversation.lease
    assert lease is not None
    looked = list(handed)
    handed.clear()
    try:
        if not await _answer_pending(conversation, deps):
            return False
        _looked(deps, looked)
        while not tenure.retiring:
            msg: ConversationMsg | None = None
            with trio.move_on_after(deps.settings.idle_s) as tenure.idle:
                try:
                    msg = await receive.receive()
                except trio.EndOfChannel:
                    return True
            tenure.idle = None
            if msg is None and not tenure.retiring:
                deps.metrics.reaped += 1
                log.debug("conversation.reaped", conversation_id=conversation.conversation_id)
                return True
            looked = _take_queued(receive)  # one read of the store answers them all
            if msg is not None:
                looked.append(msg)
            if not await _answer_pending(conversation, deps):
                return False
            _looked(deps, looked)
        # Retired (the person's key changed): what is waiting now is answered here.
        looked = _take_queued(receive)
        if not await _answer_pending(conversation, deps):
            return False
        _looked(deps, looked)
        log.info("conversation.retired", conversation_id=conversation.conversation_id)
    except StaleLease:
        lease.lost = True
        leases.stats.stale_refused += 1
        log.warning(
            "conversation.commit_refused",
            reason="stale_lease",
            lease_key=lease.key,
            epoch=lease.epoch,
        )
    finally:
        _looked(deps, looked)
    return True


async def _pending(deps: ConversationDeps, person: str, *, limit: int) -> list[Inbound]:
    """The person's unprocessed rows over all their identities, oldest first."""
    rows: list[Inbound] = []
    for identity in deps.people.identities(person):
        rows += await deps.store.pending_inbox(user_key=identity, limit=limit)
    return sorted(rows, key=lambda row: row.inbox_id)[:limit]


async def _answer_pending(conversation: Conversation, deps: ConversationDeps) -> bool:
    """Answer the person's unprocessed rows, oldest first; False once the turn gate closed."""
    limit = deps.settings.queue_size * 8
    while True:
        if deps.gate.closed:
            return False
        pending = await _pending(deps, conversation.user_key, limit=limit)
        if not pending:
            return True
        if conversation.conversation_id is None:
            first = pending[0]
            await conversation.open(
                first.channel, first.user_key, first.display_name, pending_limit=0
            )
        fresh = [row for row in pending if conversation.unseen(row.inbox_id)]
        for row in fresh:
            if not await deps.gate.turn(conversation.handle, row):
                return False
        # Rows that came meanwhile are woken for (their message or ``InboxWake`` is queued):
        # read again now only when this read was cut at the limit.
        if not fresh or len(pending) < limit:
            return True
