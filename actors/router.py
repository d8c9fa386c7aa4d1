"""The router: one task owns user → conversation actor, and never waits on a slow user.

A user's first message starts their actor (a keyed child of the conversations
supervisor); a reaped or crashed actor is started again and the message resent.
When a user's queue is full the router answers "one moment" itself.

A message from the staff chat (kind ``STAFF``) goes to the staff desk instead; when
its queue is full the row waits in the inbox for the replayer.

With several replicas (``leased``), a message for a person whose actor's queue is
full is not answered "one moment": the row is in the store, and the actor reads the
person's pending rows whenever it looks. ``wake`` tells the person's actor, if it
runs here, that another replica accepted a row for them.

A busy reply marks the message processed: the user is told this message was not
taken and to send it again, which is more honest than answering it minutes later
out of turn, and it keeps the replayer from re-queueing it into the same full
queue forever. At most one busy reply per user per ``busy_notice_s``; messages in
between are counted in ``busy_dropped`` (the user already has the notice).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.handover import Handover
from concierge.domain import Admission, Languages, People, Reply, nudge_outbox, offer
from concierge.observability import Check, Status
from concierge.protocol import (
    Channel,
    ConversationMsg,
    Inbound,
    InboundKind,
    InboxWake,
    OutboundReply,
    OutboxMsg,
    RouterMsg,
    StaffDeskMsg,
    TurnRecord,
)
from concierge.store import Turns
from supervisors import ChildAlreadyRunning

log = structlog.get_logger(__name__)

STORE_TIMEOUT_S = 10.0


def conversation_key(user_key: str) -> str:
    """The conversations supervisor's key for a person (``People.person_of``): a pseudonym,
    since supervisors log their keys.

    User keys carry phone numbers (WhatsApp) and platform ids; the pseudonym is stable,
    so an operator can still find a user's actor: ``conversation_key("waha:...@c.us")``.
    """
    return "conv-" + hashlib.blake2s(user_key.encode(), digest_size=8).hexdigest()


def wake_conversation(conversations: ConversationRegistry, people: People, user_key: str) -> bool:
    """Tell the person's actor, if it runs here, that another replica accepted a row for them
    (``user_key`` is the row's identity; the actor is keyed by its person, as ``route`` does).

    ``False`` when no actor of theirs runs here (its holder is elsewhere, or it ended:
    an ending actor lets its lease go and every replica hears of rows still waiting).
    """
    send = conversations.get(conversation_key(people.person_of(user_key)))
    if send is None:
        return False
    try:
        send.send_nowait(InboxWake(user_key=user_key))
    except trio.WouldBlock:
        return True  # a full queue: the actor looks at the store anyway
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


class ConversationRegistry(Protocol):
    """What the router needs from the keyed conversations supervisor."""

    def __contains__(self, key: object) -> bool: ...

    def get(self, key: str) -> trio.MemorySendChannel[ConversationMsg] | None: ...

    def start_child_soon(self, key: str, *args: Any) -> None:
        """Start the key's actor, not waiting; raises ``ChildAlreadyRunning`` while it is hosted."""
        ...


@attrs.define(kw_only=True)
class RouterStats:
    """Counters for ``/health`` and ``/metrics``; ``live`` reads the conversation actors' count."""

    routed: int = 0
    actors_started: int = 0
    resends: int = 0
    busy_replies: int = 0
    busy_dropped: int = 0
    start_failures: int = 0
    left_to_restart: int = 0
    staff_routed: int = 0
    staff_deferred: int = 0
    live_actors: Callable[[], int] | None = None
    """Counts the conversation actors alive now (the builder points it at their metrics)."""

    def live(self) -> int:
        return self.live_actors() if self.live_actors is not None else 0

    def statistics(self) -> dict[str, int]:
        return {
            "routed": self.routed,
            "actors_started": self.actors_started,
            "resends": self.resends,
            "busy_replies": self.busy_replies,
            "busy_dropped": self.busy_dropped,
            "start_failures": self.start_failures,
            "left_to_restart": self.left_to_restart,
            "staff_routed": self.staff_routed,
            "staff_deferred": self.staff_deferred,
            "live_actors": self.live(),
        }

    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="conversations",
            measurement="live_actors",
            status=Status.PASS,
            observed_value=self.live(),
            observed_unit="actors",
        )
        yield Check(
            component="conversations",
            measurement="busy_replies",
            status=Status.PASS,
            observed_value=self.busy_replies,
            observed_unit="replies",
        )

    def metrics(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "concierge_conversations_live", "Conversation actors alive now", value=self.live()
        )
        yield CounterMetricFamily(
            "concierge_router_messages",
            "Messages the router handed to conversations",
            value=self.routed,
        )
        busy = CounterMetricFamily(
            "concierge_router_busy",
            "Messages answered 'one moment' because the user's queue was full",
            labels=["notice"],
        )
        busy.add_metric(["sent"], self.busy_replies)
        busy.add_metric(["suppressed"], self.busy_dropped)
        yield busy
        yield CounterMetricFamily(
            "concierge_conversations_started",
            "Conversation actors started",
            value=self.actors_started,
        )


class _BusyNotices:
    """When each user last got a busy reply (bounded: the oldest entries are forgotten)."""

    def __init__(self, *, every_s: float, capacity: int = 10_000) -> None:
        self._every_s = every_s
        self._capacity = capacity
        self._last: OrderedDict[str, float] = OrderedDict()

    def due(self, user_key: str, now: float) -> bool:
        last = self._last.get(user_key)
        if last is not None and now - last < self._every_s:
            return False
        self._last[user_key] = now
        self._last.move_to_end(user_key)
        if len(self._last) > self._capacity:
            self._last.popitem(last=False)
        return True


class _Router:
    """The router's state: who is being started, and the busy-notice memory.

    Waiting for an actor to report ready inside the loop would make every user wait
    for each new user's start, so the router never waits: messages for a user whose
    actor is starting wait in its ``Handover`` (at most ``queue_size``, like the actor's
    own queue), which the actor takes, in order, as it starts.
    """

    def __init__(
        self,
        *,
        conversations: ConversationRegistry,
        store: Turns,
        outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]],
        languages: Languages,
        stats: RouterStats,
        busy_notice_s: float,
        queue_size: int,
        staff_desk: trio.MemorySendChannel[StaffDeskMsg] | None,
        people: People,
        leased: bool = False,
        admission: Admission | None = None,
    ) -> None:
        self.leased = leased
        self.admission = admission
        self.conversations = conversations
        self.people = people
        self.languages = languages
        self.staff_desk = staff_desk
        self.store = store
        self.outbox_nudges = outbox_nudges
        self.stats = stats
        self.notices = _BusyNotices(every_s=busy_notice_s)
        self.queue_size = queue_size
        self.starting: dict[str, Handover] = {}

    async def route(self, msg: Inbound) -> None:
        # By person, as known now: a person on several channels has one actor.
        person = self.people.person_of(msg.user_key)
        key = conversation_key(person)
        handover = self.starting.get(key)
        if handover is not None:
            if key in self.conversations:  # still starting: it takes these as it starts
                if len(handover) < self.queue_size:
                    handover.add(msg)
                elif not self.leased:
                    await self.busy(msg)
                return
            # It ended before taking them (a failed start): those rows wait for the replay.
            del self.starting[key]
            self.stats.start_failures += 1
            log.warning("router.start_failed", waiting=len(handover))
        send = self.conversations.get(key)
        if send is not None:
            try:
                send.send_nowait(msg)
            except trio.WouldBlock:
                if self.leased:  # the actor reads the row from the store when it looks
                    self.stats.routed += 1
                    self.release(msg)  # dropped from memory: no turn in flight here
                else:
                    await self.busy(msg)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Reaped (ended after idling) or crashed: start it again and resend.
                self.stats.resends += 1
            else:
                self.stats.routed += 1
                return
        await self.start(key, person, msg)

    async def to_staff_desk(self, msg: Inbound) -> None:
        """Hand a staff chat message to the staff desk; a full queue leaves it to the replayer."""
        if self.staff_desk is None:
            log.warning(
                "router.staff_message_dropped",
                correlation_id=msg.correlation_id,
                inbox_id=msg.inbox_id,
                reason="no staff desk",
            )
            with trio.fail_after(STORE_TIMEOUT_S):
                await self.store.mark_processed(msg.inbox_id)
            return
        if not offer(self.staff_desk, msg):
            self.stats.staff_deferred += 1
            log.info(
                "router.staff_deferred", correlation_id=msg.correlation_id, inbox_id=msg.inbox_id
            )
            return
        self.stats.staff_routed += 1

    async def start(self, key: str, person: str, msg: Inbound) -> None:
        """Start the person's actor with ``msg`` handed over; never waits for the start."""
        handover = Handover(msg, on_taken=partial(self._taken, key))
        try:
            self.conversations.start_child_soon(key, person, handover)
        except ChildAlreadyRunning:
            # Between two runs after a crash: the row stays unprocessed in the inbox and
            # the actor reads it when it is back.
            self.stats.left_to_restart += 1
            log.info(
                "router.left_to_restart", correlation_id=msg.correlation_id, inbox_id=msg.inbox_id
            )
            self.release(msg)
            return
        except Exception as exc:  # a refused start becomes a busy reply, not a router crash
            self.stats.start_failures += 1
            log.warning("router.start_failed", error=type(exc).__name__)
            await self.busy(msg)
            return
        self.starting[key] = handover
        self.stats.actors_started += 1

    def _taken(self, key: str, handover: Handover, count: int) -> None:
        if self.starting.get(key) is handover:
            del self.starting[key]
        self.stats.routed += count

    def release(self, msg: Inbound) -> None:
        """The message is no turn in flight any more (dropped, or not a turn)."""
        if self.admission is not None:
            self.admission.release(msg.inbox_id)

    async def busy(self, msg: Inbound) -> None:
        """Tell the user to resend (at most once per window) and mark the message processed."""
        try:
            await self._busy(msg)
        finally:
            self.release(msg)

    async def _busy(self, msg: Inbound) -> None:
        stats = self.stats
        with trio.fail_after(STORE_TIMEOUT_S):
            if self.notices.due(msg.user_key, trio.current_time()):
                stats.busy_replies += 1
                language = self.languages.detect(msg.text, hint=msg.language_hint)
                text = self.languages.reply(Reply.BUSY, language)
                notice = OutboundReply.answering(msg, text=text)
                # The notice and the row's mark commit together: a crash cannot repeat it.
                written = await self.store.complete_turn(
                    TurnRecord(
                        inbox_id=msg.inbox_id,
                        conversation_id=None,
                        correlation_id=msg.correlation_id,
                        service_type=None,
                        replies=(notice,),
                    )
                )
                if written:
                    nudge_outbox(self.outbox_nudges, msg.channel, msg.correlation_id)
                log.info(
                    "router.busy_replied", correlation_id=msg.correlation_id, inbox_id=msg.inbox_id
                )
            else:
                stats.busy_dropped += 1
                log.info(
                    "router.busy_suppressed",
                    correlation_id=msg.correlation_id,
                    inbox_id=msg.inbox_id,
                )
                await self.store.mark_processed(msg.inbox_id)


async def run_router(
    *,
    inbox: trio.MemoryReceiveChannel[RouterMsg],
    conversations: ConversationRegistry,
    store: Turns,
    outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]],
    languages: Languages,
    stats: RouterStats,
    busy_notice_s: float = 30.0,
    queue_size: int = 4,
    staff_desk: trio.MemorySendChannel[StaffDeskMsg] | None = None,
    people: People | None = None,
    leased: bool = False,
    admission: Admission | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand each inbound message to its user's conversation without ever blocking on one.

    The inbox belongs to whoever built it (a restarted router reads it again), so
    the router does not close it.
    """
    router = _Router(
        conversations=conversations,
        store=store,
        outbox_nudges=outbox_nudges,
        languages=languages,
        stats=stats,
        busy_notice_s=busy_notice_s,
        queue_size=queue_size,
        staff_desk=staff_desk,
        people=People() if people is None else people,
        leased=leased,
        admission=admission,
    )
    task_status.started()
    async for msg in inbox:
        match msg:
            case Inbound(kind=InboundKind.STAFF):
                router.release(msg)  # the staff desk's work is no turn
                await router.to_staff_desk(msg)
            case Inbound():
                await router.route(msg)
