"""Admission of turns: how many inbox rows may be worked on at once, by what the process keeps up with.

Every row is committed to the durable inbox before its webhook is acknowledged, so a
row need not be taken into memory at once. ``Admission`` admits a row (hands it to the
router) only while the turns in flight stay under a limit; a row it refuses stays
unprocessed in the inbox, and the inbox drain hands it over when a turn ends. The
limit adapts: it shrinks when the event loop falls behind (its lag, measured by
``run_loop_lag_monitor``, passes ``lag_target_s``), so acknowledgements keep their
share of the loop, and grows back while the loop keeps up and rows wait. It is also
closed while the outbox has more due replies than ``outbox_limit``: answering faster
than the platform takes replies only makes them wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.observability import Check, Status

__all__ = ["Admission"]


@attrs.define(eq=False)
class Admission:
    """Turns in flight, keyed by inbox id; never blocks a caller. An ``Observable``.

    ``max_turns`` is the ceiling (and the first limit), ``min_turns`` the floor the lag
    can push the limit down to. An admitted row not released within ``expire_s`` (its
    actor crashed mid-turn) stops counting.
    """

    max_turns: int
    min_turns: int = 8
    lag_target_s: float = 0.02
    outbox_limit: int = 200
    expire_s: float = 300.0
    outbox_backlog: Callable[[], int] = attrs.field(default=lambda: 0)
    limit: float = attrs.field(init=False)
    deferred: int = attrs.field(init=False, default=0)
    """Rows left in the inbox since the drain last found none waiting."""
    admitted: int = attrs.field(init=False, default=0)
    refused: int = attrs.field(init=False, default=0)
    lag_s: float = attrs.field(init=False, default=0.0)
    _in_flight: dict[int, float] = attrs.field(init=False, factory=dict)
    _room: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.min_turns = max(1, min(self.min_turns, self.max_turns))
        self.limit = float(self.min_turns)  # a burst at start must not be admitted at once

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def holds(self, inbox_id: int) -> bool:
        return inbox_id in self._in_flight

    def room(self) -> int:
        """How many more rows may be admitted now."""
        if self.outbox_backlog() >= self.outbox_limit:
            return 0
        self._expire()
        return max(0, math.floor(self.limit) - len(self._in_flight))

    def admit(self, inbox_id: int) -> bool:
        """Take ``inbox_id`` in flight if there is room; ``False`` leaves it to the drain."""
        if inbox_id in self._in_flight:
            return False
        if self.room() <= 0:
            self.refused += 1
            return False
        self._in_flight[inbox_id] = trio.current_time()
        self.admitted += 1
        return True

    def defer(self) -> None:
        """A new row was left in the inbox: the drain has work when room comes."""
        self.deferred += 1

    def drained(self, seen: int) -> None:
        """The drain found no row waiting beyond those in flight, as of when ``deferred``
        was ``seen``: rows left in the inbox since then still count."""
        self.deferred = max(0, self.deferred - seen)

    def release(self, inbox_id: int) -> None:
        """The row's turn ended (or it was dropped); idempotent."""
        if self._in_flight.pop(inbox_id, None) is not None and self.deferred:
            self._room.set()

    async def wait_for_work(self) -> None:
        """Until rows wait in the inbox and there is room for one."""
        while not (self.deferred and self.room() > 0):
            self._room = trio.Event()
            await self._room.wait()

    def observe_lag(self, lag_s: float) -> None:
        """One measure of the event loop's lag: shrink the limit when behind, grow it back."""
        self.lag_s = lag_s
        if lag_s > self.lag_target_s:
            self.limit = max(float(self.min_turns), self.limit * 0.9)
        elif self.limit < self.max_turns and len(self._in_flight) >= math.floor(self.limit):
            # rows wait and the loop keeps up: grow, faster while the lag is far below target
            grown = self.limit * 1.05 + 1.0 if lag_s < self.lag_target_s / 2 else self.limit + 1.0
            self.limit = min(float(self.max_turns), grown)
            if self.deferred:
                self._room.set()

    def _expire(self) -> None:
        if not self._in_flight:
            return
        oldest = next(iter(self._in_flight.values()))
        horizon = trio.current_time() - self.expire_s
        if oldest >= horizon:
            return
        for inbox_id in [i for i, t in self._in_flight.items() if t < horizon]:
            del self._in_flight[inbox_id]

    # -- Observable ----------------------------------------------------------------------
    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="turns",
            measurement="inFlight",
            status=Status.PASS,
            observed_value=len(self._in_flight),
            observed_unit="turns",
            details={
                "limit": math.floor(self.limit),
                "deferred": self.deferred,
                "loopLagMs": round(self.lag_s * 1000, 1),
            },
        )

    def metrics(self) -> Iterable[Metric]:
        gauges = (
            ("concierge_turns_in_flight", "Inbox rows admitted and not yet done", self.in_flight),
            ("concierge_turns_limit", "Turns admitted at most now", math.floor(self.limit)),
            ("concierge_event_loop_lag_seconds", "Last measured event-loop lag", self.lag_s),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        refused = CounterMetricFamily(
            "concierge_turns_deferred", "Rows left in the durable inbox for lack of room"
        )
        refused.add_metric([], self.refused)
        yield refused
