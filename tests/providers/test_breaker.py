"""The circuit breaker on a hand-driven clock: when it opens, probes, closes and for how long."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings as hyp_settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from structlog.testing import capture_logs

from concierge.providers import BreakerState, CircuitBreaker, Ticket
from concierge.providers.breaker import JITTER
from concierge.settings import BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    clock: Clock,
    *,
    window: int = 20,
    min_calls: int = 5,
    rate: float = 0.5,
    consecutive: int = 5,
    open_s: float = 30.0,
    open_max_s: float = 300.0,
    seed: int = 1,
) -> CircuitBreaker:
    settings = BreakerSettings(
        window=window,
        min_calls=min_calls,
        failure_rate=rate,
        consecutive=consecutive,
        open_s=open_s,
        open_max_s=open_max_s,
    )
    return CircuitBreaker("primary", settings, clock=clock, rng=random.Random(seed))


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read through a call so the type checker does not narrow the property between steps."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.acquire()
        assert ticket is not None
        breaker.failed(ticket)


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.acquire()
        assert ticket is not None
        breaker.succeeded(ticket)


def test_opens_after_consecutive_transient_failures() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=3, min_calls=100)
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.acquire() is None


def test_a_success_resets_the_consecutive_count() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=3, min_calls=100)
    fail(breaker, 2)
    succeed(breaker)
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED


def test_opens_on_failure_rate_over_the_window_once_min_calls_are_seen() -> None:
    clock = Clock()
    breaker = make(clock, window=10, min_calls=6, rate=0.5, consecutive=100)
    # fail, fail, ok, fail, fail: 4/5, but below min_calls
    for verdict in (fail, fail, succeed, fail, fail):
        verdict(breaker)
    assert state(breaker) is BreakerState.CLOSED
    succeed(breaker)  # 4/6, but a success never opens the breaker
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker)  # 5/7
    assert state(breaker) is BreakerState.OPEN


def test_the_window_forgets_old_outcomes() -> None:
    clock = Clock()
    breaker = make(clock, window=4, min_calls=4, rate=0.75, consecutive=100)
    fail(breaker, 2)
    succeed(breaker, 4)  # the two failures slid out of the window
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED


def test_half_open_admits_exactly_one_probe() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1)
    fail(breaker)
    clock.now += 30 * (1 + JITTER)
    assert state(breaker) is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe is not None
    assert probe.probe
    assert breaker.acquire() is None
    assert breaker.acquire() is None


def test_a_probe_success_closes_and_resets() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=2)
    fail(breaker, 2)
    clock.now += 40
    probe = breaker.acquire()
    assert probe is not None
    with capture_logs() as logs:
        breaker.succeeded(probe, correlation_id="c1")
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.snapshot().openings == 0
    assert [e["event"] for e in logs] == ["provider.breaker_closed"]
    assert logs[0]["correlation_id"] == "c1"
    fail(breaker)
    assert state(breaker) is BreakerState.CLOSED  # the consecutive count started again


def test_a_probe_failure_reopens_for_longer() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1, open_s=30, open_max_s=300)
    fail(breaker)
    first = breaker.snapshot()
    assert first.open_until is not None
    assert 30 <= first.open_until - clock.now <= 30 * (1 + JITTER)
    clock.now = first.open_until
    probe = breaker.acquire()
    assert probe is not None
    breaker.failed(probe)
    second = breaker.snapshot()
    assert second.state is BreakerState.OPEN
    assert second.openings == 2
    assert second.open_until is not None
    assert 60 <= second.open_until - clock.now <= 60 * (1 + JITTER)


def test_open_time_is_capped() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1, open_s=100, open_max_s=250)
    fail(breaker)
    for _ in range(5):
        until = breaker.snapshot().open_until
        assert until is not None
        assert until - clock.now <= 250 * (1 + JITTER)
        clock.now = until
        probe = breaker.acquire()
        assert probe is not None
        breaker.failed(probe)
    until = breaker.snapshot().open_until
    assert until is not None
    assert 250 <= until - clock.now <= 250 * (1 + JITTER)


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_bounds(seed: int) -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1, open_s=30, seed=seed)
    fail(breaker)
    until = breaker.snapshot().open_until
    assert until is not None
    assert 30 <= until - clock.now <= 30 * (1 + JITTER)


def test_jitter_varies_between_breakers() -> None:
    durations = set()
    for seed in range(5):
        clock = Clock()
        breaker = make(clock, consecutive=1, seed=seed)
        fail(breaker)
        until = breaker.snapshot().open_until
        assert until is not None
        durations.add(round(until - clock.now, 6))
    assert len(durations) > 1


def test_released_probe_lets_another_probe_through() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1)
    fail(breaker)
    clock.now += 40
    probe = breaker.acquire()
    assert probe is not None
    breaker.released(probe)  # e.g. the probe's key was throttled: no verdict
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is not None


def test_stale_results_change_nothing() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=2)
    slow = breaker.acquire()
    assert slow is not None
    fail(breaker, 2)
    clock.now += 40
    probe = breaker.acquire()
    assert probe is not None
    breaker.succeeded(slow)  # admitted before the breaker opened: not the probe
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is None
    breaker.failed(probe)
    assert state(breaker) is BreakerState.OPEN


def test_force_probe_opens_the_way_for_one_call() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=1)
    fail(breaker)
    assert breaker.acquire() is None
    with capture_logs() as logs:
        ticket = breaker.force_probe(correlation_id="c9")
    assert ticket is not None
    assert ticket.probe
    assert breaker.force_probe() is None
    assert logs[0]["event"] == "provider.breaker_half_open"
    assert logs[0]["correlation_id"] == "c9"


def test_opening_is_logged_with_the_reason() -> None:
    clock = Clock()
    breaker = make(clock, consecutive=2)
    with capture_logs() as logs:
        for _ in range(2):
            ticket = breaker.acquire()
            assert ticket is not None
            breaker.failed(ticket, correlation_id="c2")
    opened = [e for e in logs if e["event"] == "provider.breaker_opened"]
    assert len(opened) == 1
    assert opened[0]["provider"] == "primary"
    assert opened[0]["correlation_id"] == "c2"
    assert "consecutive" in opened[0]["reason"]


# -- properties -------------------------------------------------------------------------------
class BreakerMachine(RuleBasedStateMachine):
    """Random calls, verdicts and clock advances; the breaker's promises must hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.settings = BreakerSettings(
            window=6, min_calls=3, failure_rate=0.5, consecutive=3, open_s=10.0, open_max_s=40.0
        )
        self.breaker = CircuitBreaker("p", self.settings, clock=self.clock, rng=random.Random(7))
        self.outstanding: list[Ticket] = []
        self.probes_out = 0

    def _open_now(self) -> bool:
        return self.breaker.snapshot().state is BreakerState.OPEN

    @rule()
    def call(self) -> None:
        before = self.breaker.state
        ticket = self.breaker.acquire()
        if before is BreakerState.OPEN:
            assert ticket is None
        if ticket is not None:
            if ticket.probe:
                self.probes_out += 1
            self.outstanding.append(ticket)

    @precondition(lambda self: bool(self.outstanding))
    @rule(index=st.integers(min_value=0), verdict=st.sampled_from(["ok", "transient", "neutral"]))
    def finish(self, index: int, verdict: str) -> None:
        ticket = self.outstanding.pop(index % len(self.outstanding))
        state_before = self.breaker.state
        openings_before = self.breaker.snapshot().total_openings
        current = ticket.generation == self.breaker._generation
        if verdict == "ok":
            self.breaker.succeeded(ticket)
            if ticket.probe and current:
                assert self.breaker.state is BreakerState.CLOSED
        elif verdict == "transient":
            self.breaker.failed(ticket)
            if ticket.probe and current:
                snap = self.breaker.snapshot()
                assert snap.state is BreakerState.OPEN
                assert snap.total_openings == openings_before + 1
        else:
            self.breaker.released(ticket)
        if verdict != "transient":
            # only transient failures open a breaker
            assert self.breaker.snapshot().total_openings == openings_before
            if state_before is BreakerState.CLOSED:
                assert self.breaker.state is BreakerState.CLOSED

    @rule(seconds=st.floats(min_value=0.0, max_value=60.0))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def at_most_one_probe_in_flight(self) -> None:
        live_probes = [
            t for t in self.outstanding if t.probe and t.generation == self.breaker._generation
        ]
        assert len(live_probes) <= 1
        if live_probes:
            assert self.breaker.acquire() is None

    @invariant()
    def open_time_is_within_bounds(self) -> None:
        snap = self.breaker.snapshot()
        if snap.state is BreakerState.OPEN:
            assert snap.open_until is not None
            assert snap.opened_at is not None
            duration = snap.open_until - snap.opened_at
            assert self.settings.open_s <= duration <= self.settings.open_max_s * (1 + JITTER)


BreakerMachine.TestCase.settings = hyp_settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
test_breaker_invariants = BreakerMachine.TestCase
