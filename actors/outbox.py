"""The outbox sender: deliver a channel's durable outbox rows, paced, retried, in per-user order.

One actor per channel. Each round reads the due rows (``Outbox.pending_outbox`` returns
only each user's oldest unsent row, so a row waiting for its retry holds back that
user's later rows) and starts one delivery per user that is not already being served.
A delivery waits for its chat's pacing slot and a global token bucket, asks the
``ChannelSender``, then records the outcome: ``mark_sent``; a retry at the server's
``retry_after`` or an exponential backoff; the row given up when the platform rejects
it or after ``max_attempts``; the user marked unreachable when they blocked us. Rounds
start at once (sending rows left over from a previous run), on a nudge, when a
delivery ends, when a retry falls due, and every ``poll_interval_s``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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
    sends in flight.
    """

    per_chat_interval_s: float = 1.0
    global_rate_per_s: float = 30.0
    global_burst: int = 30
    concurrency: int = 16
    max_in_doubt: int = 1
    """Sends whose outcome is not yet recorded, at most: a crash re-sends at most this many."""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_attempts: int = 40
    batch: int = 200

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), with up to 10 % jitter."""
        base: float = min(
            self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(max(0, attempt - 1), 40)
        )
        return base * (1.0 + 0.1 * random.random())


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
        self.store_errors = 0
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


@attrs.define
class _State:
    wake: trio.Event = attrs.field(factory=trio.Event)
    busy: set[str] = attrs.field(factory=set)
    # users whose delivery ended while a round's read was running: that read may predate the
    # delivery's store write, so the round skips them (the delivery's poke starts another)
    finished: set[str] = attrs.field(factory=set)
    chat_next: dict[str, float] = attrs.field(factory=dict)
    retries: list[float] = attrs.field(factory=list)  # a heap of trio times rows fall due

    def poke(self) -> None:
        self.wake.set()


async def _nudged(nudges: trio.MemoryReceiveChannel[OutboxMsg], state: _State) -> None:
    with nudges:
        async for _ in nudges:
            state.poke()


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


async def run_outbox_sender(
    *,
    sender: ChannelSender,
    store: Outbox,
    nudges: trio.MemoryReceiveChannel[OutboxMsg],
    pacing: Pacing | None = None,
    poll_interval_s: float = 5.0,
    stats: OutboxStats | None = None,
    clock: Callable[[], datetime] = utcnow,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver ``sender.channel``'s outbox until cancelled.

    ``clock`` gives the wall-clock instants compared with the rows' ``next_attempt_at``
    (tests on a MockClock pass one that follows trio's clock).
    """
    pacing = pacing or default_pacing(sender.channel)
    stats = stats or OutboxStats(channel=sender.channel)
    channel = sender.channel
    bucket = _TokenBucket(rate_per_s=pacing.global_rate_per_s, burst=pacing.global_burst)
    limiter = trio.CapacityLimiter(pacing.concurrency)
    in_doubt = trio.CapacityLimiter(pacing.max_in_doubt)
    state = _State()

    async def deliver(row: OutboxRow) -> None:
        log_ = log.bind(
            correlation_id=row.correlation_id, outbox_id=row.outbox_id, channel=channel.value
        )
        try:
            # the chat's slot is waited for without holding a send slot; the global token
            # is taken inside one, so sends never burst past the bucket
            now = trio.current_time()
            slot = max(now, state.chat_next.get(row.chat_id, now))
            state.chat_next[row.chat_id] = slot + pacing.per_chat_interval_s
            await trio.sleep_until(slot)
            async with limiter:
                await bucket.take()
                # A row the platform has taken but the store does not yet know is sent is
                # "in doubt": a crash now re-sends it. Bounding how many there can be at
                # once bounds the duplicates a crash can cause.
                async with in_doubt:
                    # Pace from when the send really starts: the gate may have held it.
                    started = trio.current_time()
                    state.chat_next[row.chat_id] = max(
                        state.chat_next.get(row.chat_id, started),
                        started + pacing.per_chat_interval_s,
                    )
                    stats.in_flight += 1
                    try:
                        result = await sender.send(row)
                    except Exception as exc:  # a sender bug must not stop every other delivery
                        log_.exception("outbox.sender_crashed")
                        result = SendResult(
                            status=SendStatus.RETRY, detail=f"sender error: {exc!r}"
                        )
                    finally:
                        stats.in_flight -= 1
                    await record(row, result, log_)
        finally:
            state.busy.discard(row.user_key)
            state.finished.add(row.user_key)
            state.poke()

    async def record(row: OutboxRow, result: SendResult, log_: Any) -> None:
        attempt = row.attempts + 1
        match result.status:
            case SendStatus.SENT:
                await _persist(
                    "mark_sent",
                    row,
                    lambda: store.mark_sent(row.outbox_id, message_ids=result.message_ids),
                )
                stats.sent += 1
                log_.info("outbox.sent", attempt=attempt)
            case SendStatus.RETRY if attempt < pacing.max_attempts:
                delay = (
                    result.retry_after_s
                    if result.retry_after_s is not None
                    else pacing.backoff_s(attempt)
                )
                retry_at = clock() + timedelta(seconds=delay)
                await _persist(
                    "mark_send_failed",
                    row,
                    lambda: store.mark_send_failed(
                        row.outbox_id, error=result.detail, retry_at=retry_at
                    ),
                )
                heapq.heappush(state.retries, trio.current_time() + delay)
                stats.retries += 1
                log_.warning(
                    "outbox.send_retried",
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    reason=result.detail,
                )
            case SendStatus.RETRY:
                await _persist(
                    "mark_send_failed",
                    row,
                    lambda: store.mark_send_failed(
                        row.outbox_id, error=result.detail, retry_at=None
                    ),
                )
                stats.gave_up += 1
                log_.error("outbox.gave_up", attempt=attempt, reason=result.detail)
            case SendStatus.UNREACHABLE:
                await _persist(
                    "mark_unreachable", row, lambda: store.mark_unreachable(row.user_key)
                )
                await _persist(
                    "mark_send_failed",
                    row,
                    lambda: store.mark_send_failed(
                        row.outbox_id, error=result.detail, retry_at=None
                    ),
                )
                stats.unreachable += 1
                log_.warning("outbox.user_unreachable", reason=result.detail)
            case SendStatus.REJECTED:
                await _persist(
                    "mark_send_failed",
                    row,
                    lambda: store.mark_send_failed(
                        row.outbox_id, error=result.detail, retry_at=None
                    ),
                )
                stats.rejected += 1
                log_.error("outbox.rejected", attempt=attempt, reason=result.detail)

    store_delay = 0.5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_nudged, nudges, state)
        task_status.started()
        log.info("outbox.started", channel=channel.value)
        while True:
            state.wake = trio.Event()
            while state.retries and state.retries[0] <= trio.current_time():
                heapq.heappop(state.retries)
            state.finished.clear()
            try:
                rows = await store.pending_outbox(channel, now=clock(), limit=pacing.batch)
            except StoreUnavailable as exc:
                stats.store_errors += 1
                if not stats.store_down:
                    log.warning("outbox.store_unavailable", channel=channel.value, reason=str(exc))
                stats.store_down = True
                await trio.sleep(store_delay)
                store_delay = min(store_delay * 2, poll_interval_s)
                continue
            if stats.store_down:
                log.info("outbox.store_recovered", channel=channel.value)
            stats.store_down = False
            store_delay = 0.5
            stats.backlog = len(rows)
            for row in rows:
                if row.user_key in state.busy or row.user_key in state.finished:
                    continue
                state.busy.add(row.user_key)
                nursery.start_soon(deliver, row)
            if len(state.chat_next) > 10_000:
                now = trio.current_time()
                state.chat_next = {c: t for c, t in state.chat_next.items() if t > now}
            next_retry = state.retries[0] if state.retries else math.inf
            timeout = min(poll_interval_s, max(0.0, next_retry - trio.current_time()))
            with trio.move_on_after(timeout):
                await state.wake.wait()
