"""The outbox sender: deliver a channel's durable outbox rows, paced, retried, in per-chat order.

One actor per channel. Each round reads the due rows (``Outbox.pending_outbox``: a row
waiting for its retry holds back that user's later rows) and starts one delivery per
chat that is not already being served, so different chats are sent to concurrently.
A delivery waits for its chat's pacing slot and the channel's token bucket, asks the
``ChannelSender``, then records the outcome: ``mark_sent``; a retry at the server's
``retry_after`` or an exponential backoff; the row given up when the platform rejects
it or after ``max_attempts``; the user marked unreachable when they blocked us. Rounds
start at once (sending rows left over from a previous run), on a nudge, when a
delivery ends, when a retry falls due, and every ``poll_interval_s``.

The crash guarantee: a row the platform has taken but the store does not yet record
as sent is "in doubt", and a crash re-sends it. A chat has at most one delivery at a
time, so at most one of its rows is in doubt: a crash duplicates at most one reply per
chat (per part, for a reply split into parts), and never reorders a chat's replies.
Across the channel, at most ``Pacing.concurrency`` chats are in doubt at once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.backoff import backoff_s
from actors.turn_gate import TurnGate
from concierge.channels import ChannelSender, SendResult, SendStatus
from concierge.observability import Check, Status
from concierge.protocol import Channel, OutboxMsg, OutboxRow, utcnow
from concierge.store import Outbox, StoreUnavailable

log = structlog.get_logger(__name__)


@attrs.frozen(kw_only=True)
class Pacing:
    """How fast one channel may send, and how it retries.

    ``per_chat_interval_s`` spaces messages to one chat; ``global_rate_per_s`` with
    ``global_burst`` is a token bucket over the whole channel; ``concurrency`` caps
    sends in flight (each to a different chat), so it bounds how many chats a crash
    can leave one duplicate in. It must cover the rate times a send's round trip
    (plus its ``mark_sent`` commit) for the channel to reach its rate.
    """

    per_chat_interval_s: float = 1.0
    global_rate_per_s: float = 30.0
    global_burst: int = 30
    concurrency: int = 32
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_attempts: int = 40
    batch: int = 200
    round_spacing_s: float = 0.05
    """Rounds start at most this often: each reads up to ``batch`` rows, and a round after
    every delivery cost more than the deliveries (deliveries already started wait for
    their slot without a new round)."""

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), with up to 10 % jitter."""
        return backoff_s(attempt, initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)

    @classmethod
    def for_rate(
        cls, *, rate_per_s: float, per_chat_interval_s: float, send_s: float = 1.0
    ) -> Pacing:
        """Pacing that reaches ``rate_per_s`` while each send takes up to ``send_s``.

        The burst is one second's worth; the sends in flight cover ``send_s`` seconds of
        the rate (at least 32: a slow round trip must not cap a small rate).
        """
        return cls(
            per_chat_interval_s=per_chat_interval_s,
            global_rate_per_s=rate_per_s,
            global_burst=max(1, math.ceil(rate_per_s)),
            concurrency=max(32, math.ceil(rate_per_s * send_s)),
        )


# Telegram's FAQ: about one message per second per chat, about 30 per second in total.
TELEGRAM_PACING = Pacing()
CONSOLE_PACING = Pacing(per_chat_interval_s=0.0, global_rate_per_s=1000.0, global_burst=1000)


def default_pacing(channel: Channel) -> Pacing:
    return CONSOLE_PACING if channel is Channel.CONSOLE else TELEGRAM_PACING


class OutboxStats:
    """Counters of one channel's sender; an ``Observable`` for ``/health`` and ``/metrics``.

    ``backlog`` is the number of due rows (one per user) the last round saw.
    """

    def __init__(self, *, channel: Channel, backlog_warn: int = 100) -> None:
        self.channel = channel
        self.backlog_warn = backlog_warn
        self.sent = 0
        self.retries = 0
        self.rejected = 0
        self.gave_up = 0
        self.unreachable = 0
        self.backlog = 0
        self.in_flight = 0
        self.store_down = False

    @property
    def failures(self) -> int:
        """Rows given up for good (rejected by the platform or out of attempts)."""
        return self.rejected + self.gave_up

    def health_checks(self) -> Iterable[Check]:
        status = Status.PASS
        if self.backlog >= self.backlog_warn or self.store_down:
            status = Status.WARN
        yield Check(
            component=f"outbox.{self.channel.value}",
            measurement="backlog",
            status=status,
            observed_value=self.backlog,
            observed_unit="messages",
            details={
                "sent": self.sent,
                "retries": self.retries,
                "failures": self.failures,
                "unreachable": self.unreachable,
                "inFlight": self.in_flight,
            },
        )

    def metrics(self) -> Iterable[Metric]:
        labels = [self.channel.value]
        counters = (
            ("concierge_outbox_sent", "Outbox rows delivered", self.sent),
            ("concierge_outbox_retries", "Failed deliveries scheduled for a retry", self.retries),
            (
                "concierge_outbox_failures",
                "Outbox rows given up (rejected or out of attempts)",
                self.failures,
            ),
            (
                "concierge_outbox_unreachable",
                "Deliveries refused because the user blocked us",
                self.unreachable,
            ),
        )
        for name, doc, value in counters:
            family = CounterMetricFamily(name, doc, labels=["channel"])
            family.add_metric(labels, value)
            yield family
        backlog = GaugeMetricFamily(
            "concierge_outbox_backlog", "Due outbox rows last seen", labels=["channel"]
        )
        backlog.add_metric(labels, self.backlog)
        yield backlog


class _TokenBucket:
    """Reservation-style bucket: each ``take`` waits its turn; never more than ``rate·t + burst``."""

    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._last = trio.current_time()

    async def take(self) -> None:
        now = trio.current_time()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens < 0:
            await trio.sleep(-self._tokens / self._rate)


def _chat_key(chat_id: str) -> str:
    """A chat's key in the busy sets, apart from user keys (which carry a ``channel:`` prefix)."""
    return f"#{chat_id}"


async def _persist(what: str, row: OutboxRow, op: Callable[[], Awaitable[None]]) -> None:
    """Run a store write until it succeeds: the row's user stays busy, so order holds."""
    delay = 0.2
    while True:
        try:
            await op()
            return
        except StoreUnavailable as exc:
            log.warning(
                "outbox.store_write_failed",
                correlation_id=row.correlation_id,
                outbox_id=row.outbox_id,
                write=what,
                reason=str(exc),
            )
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)


class _OutboxSender:
    """One channel's deliveries: who is being served, each chat's next slot, due retries.

    A round reads the due rows and starts one delivery per user not already being
    served; a delivery waits for its chat's slot and a send slot, sends, records the
    outcome and pokes the next round.
    """

    def __init__(
        self,
        *,
        sender: ChannelSender,
        store: Outbox,
        pacing: Pacing,
        stats: OutboxStats,
        clock: Callable[[], datetime],
        gate: TurnGate,
    ) -> None:
        self.sender = sender
        self.gate = gate
        self.channel = sender.channel
        self.store = store
        self.pacing = pacing
        self.stats = stats
        self.clock = clock
        self.bucket = _TokenBucket(rate_per_s=pacing.global_rate_per_s, burst=pacing.global_burst)
        self.limiter = trio.CapacityLimiter(pacing.concurrency)
        self.wake = trio.Event()
        # Users and chats with a delivery under way: one at a time each, so a chat has at
        # most one row in doubt and its rows go in order.
        self.busy: set[str] = set()
        # users and chats whose delivery ended while a round's read was running: that read
        # may predate the delivery's store write, so the round skips them (the delivery's
        # poke starts another)
        self.finished: set[str] = set()
        self.chat_next: dict[str, float] = {}
        self.retries: list[float] = []  # a heap of trio times rows fall due

    def poke(self) -> None:
        self.wake.set()

    async def run(
        self,
        nudges: trio.MemoryReceiveChannel[OutboxMsg],
        *,
        poll_interval_s: float,
        task_status: trio.TaskStatus[None],
    ) -> None:
        store_delay = 0.5
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._nudged, nudges)
            task_status.started()
            log.info("outbox.started", channel=self.channel.value)
            while True:
                self.wake = trio.Event()
                next_round = trio.current_time() + self.pacing.round_spacing_s
                read: list[bool] = []
                # A round (its claim included) is in flight for the gate: a drain that
                # closes it waits for the claim to commit before giving claims back.
                if not await self.gate.turn(partial(self._round, read), nursery):
                    # A drain: claim nothing more (rows claimed and not sent are given back
                    # for another replica once the deliveries in flight have ended).
                    await trio.sleep_forever()
                if not all(read):
                    await trio.sleep(store_delay)
                    store_delay = min(store_delay * 2, poll_interval_s)
                    continue
                store_delay = 0.5
                with trio.move_on_after(self._idle_s(poll_interval_s)):
                    await self.wake.wait()
                await trio.sleep_until(next_round)

    async def _round(self, read: list[bool], nursery: trio.Nursery) -> None:
        """Claim the due rows and start their deliveries; ``read`` gets False while the
        store is down."""
        rows = await self._due_rows()
        read.append(rows is not None)
        if rows is not None:
            self._start_deliveries(nursery, rows)

    async def _nudged(self, nudges: trio.MemoryReceiveChannel[OutboxMsg]) -> None:
        with nudges:
            async for _ in nudges:
                self.poke()

    async def _due_rows(self) -> Sequence[OutboxRow] | None:
        """The rows due now, or ``None`` while the store is down (logged once per outage)."""
        while self.retries and self.retries[0] <= trio.current_time():
            heapq.heappop(self.retries)
        self.finished.clear()
        stats = self.stats
        try:
            rows = await self.store.pending_outbox(
                self.channel, now=self.clock(), limit=self.pacing.batch
            )
        except StoreUnavailable as exc:
            if not stats.store_down:
                log.warning("outbox.store_unavailable", channel=self.channel.value, reason=str(exc))
            stats.store_down = True
            return None
        if stats.store_down:
            log.info("outbox.store_recovered", channel=self.channel.value)
        stats.store_down = False
        return rows

    def _start_deliveries(self, nursery: trio.Nursery, rows: Sequence[OutboxRow]) -> None:
        self.stats.backlog = len(rows)
        busy, finished = self.busy, self.finished
        for row in rows:
            user, chat = row.user_key, _chat_key(row.chat_id)
            if user in busy or chat in busy or user in finished or chat in finished:
                continue
            busy.add(user)
            busy.add(chat)
            nursery.start_soon(self._deliver, row)
        if len(self.chat_next) > 10_000:
            now = trio.current_time()
            self.chat_next = {c: t for c, t in self.chat_next.items() if t > now}

    def _idle_s(self, poll_interval_s: float) -> float:
        """How long the next round may wait for a poke: until a retry falls due, at most a poll."""
        next_retry = self.retries[0] if self.retries else math.inf
        return min(poll_interval_s, max(0.0, next_retry - trio.current_time()))

    async def _deliver(self, row: OutboxRow) -> None:
        try:
            # A closed gate (a drain) starts no delivery; it waits for those in flight.
            await self.gate.turn(self._deliver_row, row)
        finally:
            chat = _chat_key(row.chat_id)
            self.busy.discard(row.user_key)
            self.busy.discard(chat)
            self.finished.add(row.user_key)
            self.finished.add(chat)
            self.poke()

    async def _deliver_row(self, row: OutboxRow) -> None:
        log_ = log.bind(
            correlation_id=row.correlation_id, outbox_id=row.outbox_id, channel=self.channel.value
        )
        chat_next, interval_s = self.chat_next, self.pacing.per_chat_interval_s
        # the chat's slot is waited for without holding a send slot; the global token
        # is taken inside one, so sends never burst past the bucket
        now = trio.current_time()
        slot = max(now, chat_next.get(row.chat_id, now))
        chat_next[row.chat_id] = slot + interval_s
        await trio.sleep_until(slot)
        async with self.limiter:
            await self.bucket.take()
            # Pace from when the send really starts: the gates may have held it.
            started = trio.current_time()
            chat_next[row.chat_id] = max(chat_next.get(row.chat_id, started), started + interval_s)
            result = await self._send(row, log_)
            await self._record(row, result, log_)

    async def _send(self, row: OutboxRow, log_: Any) -> SendResult:
        self.stats.in_flight += 1
        try:
            return await self.sender.send(row)
        except Exception as exc:  # a sender bug must not stop every other delivery
            log_.exception("outbox.sender_crashed")
            return SendResult(status=SendStatus.RETRY, detail=f"sender error: {exc!r}")
        finally:
            self.stats.in_flight -= 1

    async def _record(self, row: OutboxRow, result: SendResult, log_: Any) -> None:
        attempt = row.attempts + 1
        stats, store = self.stats, self.store
        match result.status:
            case SendStatus.SENT:
                await _persist(
                    "mark_sent",
                    row,
                    lambda: store.mark_sent(row.outbox_id, message_ids=result.message_ids),
                )
                stats.sent += 1
                log_.info("outbox.sent", attempt=attempt)
            case SendStatus.RETRY if attempt < self.pacing.max_attempts:
                delay = (
                    result.retry_after_s
                    if result.retry_after_s is not None
                    else self.pacing.backoff_s(attempt)
                )
                retry_at = self.clock() + timedelta(seconds=delay)
                await self._mark_failed(row, result, retry_at=retry_at)
                heapq.heappush(self.retries, trio.current_time() + delay)
                stats.retries += 1
                log_.warning(
                    "outbox.send_retried",
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    reason=result.detail,
                )
            case SendStatus.RETRY:
                await self._mark_failed(row, result)
                stats.gave_up += 1
                log_.error("outbox.gave_up", attempt=attempt, reason=result.detail)
            case SendStatus.UNREACHABLE:
                await _persist(
                    "mark_unreachable", row, lambda: store.mark_unreachable(row.user_key)
                )
                await self._mark_failed(row, result)
                stats.unreachable += 1
                log_.warning("outbox.user_unreachable", reason=result.detail)
            case SendStatus.REJECTED:
                await self._mark_failed(row, result)
                stats.rejected += 1
                log_.error("outbox.rejected", attempt=attempt, reason=result.detail)

    async def _mark_failed(
        self, row: OutboxRow, result: SendResult, *, retry_at: datetime | None = None
    ) -> None:
        """Record a failed send: retried at ``retry_at``, or given up when it is ``None``."""
        await _persist(
            "mark_send_failed",
            row,
            lambda: self.store.mark_send_failed(
                row.outbox_id, error=result.detail, retry_at=retry_at
            ),
        )


async def run_outbox_sender(
    *,
    sender: ChannelSender,
    store: Outbox,
    nudges: trio.MemoryReceiveChannel[OutboxMsg],
    pacing: Pacing | None = None,
    poll_interval_s: float = 5.0,
    stats: OutboxStats | None = None,
    clock: Callable[[], datetime] = utcnow,
    gate: TurnGate | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver ``sender.channel``'s outbox until cancelled; closes ``nudges``.

    ``gate`` (the daemon's sending gate) is closed by a drain: from then on no row is
    claimed and no delivery starts, and ``gate.wait_idle`` says when the last one ended.

    ``clock`` gives the wall-clock instants compared with the rows' ``next_attempt_at``
    (tests on a MockClock pass one that follows trio's clock).
    """
    outbox = _OutboxSender(
        sender=sender,
        store=store,
        pacing=pacing or default_pacing(sender.channel),
        stats=stats or OutboxStats(channel=sender.channel),
        clock=clock,
        gate=TurnGate() if gate is None else gate,
    )
    await outbox.run(nudges, poll_interval_s=poll_interval_s, task_status=task_status)
