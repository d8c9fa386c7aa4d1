"""Backoff before restarts: exponential, capped, jittered, and reset after a long run."""

from __future__ import annotations

import itertools
import random

import pytest
import trio

from supervisors import Backoff, Supervisor
from tests.supervisors.scripted import Child, Timeline, crash, crash_after, running, serve


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_delay_doubles_from_initial_and_stops_at_max() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0, jitter_s=0.0)
    rng = random.Random(1)
    assert [backoff.delay(n, rng) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_delay_adds_uniform_jitter_drawn_from_the_given_rng() -> None:
    backoff = Backoff(initial_s=1.0, max_s=100.0, jitter_s=0.25)
    rng, expected = random.Random(7), random.Random(7)
    for n in (1, 2, 3):
        assert backoff.delay(n, rng) == 2 ** (n - 1) + expected.uniform(0.0, 0.25)
    draws = [backoff.delay(1, random.Random(seed)) for seed in range(50)]
    assert all(1.0 <= d <= 1.25 for d in draws)
    assert len(set(draws)) > 1


def test_jitter_never_pushes_the_delay_past_max() -> None:
    backoff = Backoff(initial_s=1.0, max_s=2.0, jitter_s=5.0)
    rng = random.Random(3)
    assert all(backoff.delay(n, rng) <= 2.0 for n in range(1, 50))


def test_a_huge_restart_number_stays_finite() -> None:
    assert Backoff(initial_s=1.0, max_s=9.0, jitter_s=0.0).delay(10_000, random.Random()) == 9.0


def test_bad_backoff_settings_are_named() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=-1.0)
    with pytest.raises(ValueError, match="restart number n"):
        Backoff().delay(0, random.Random())


@pytest.mark.anyio
@pytest.mark.autojump
async def test_consecutive_restarts_wait_longer_each_time_up_to_max() -> None:
    t = Timeline()
    child = Child("c", t, crash)
    supervisor = Supervisor(
        name="s",
        children=[child.spec()],
        max_restarts=100,
        period_s=1.0,
        backoff=Backoff(initial_s=1.0, max_s=4.0, jitter_s=0.0),
    )
    async with running(supervisor):
        await trio.sleep(20)
        assert gaps(t.times("c", "called"))[:5] == [1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.anyio
@pytest.mark.autojump
async def test_backoff_starts_over_after_the_child_stayed_up_reset_after_s() -> None:
    t = Timeline()
    # Three quick crashes (1, 2, 4 s of backoff), then a run of 10 s, then quick crashes again.
    child = Child("c", t, crash, crash, crash, crash_after(10), crash, crash, serve)
    supervisor = Supervisor(
        name="s",
        children=[child.spec()],
        max_restarts=100,
        period_s=1.0,
        backoff=Backoff(initial_s=1.0, max_s=60.0, jitter_s=0.0),
        reset_after_s=10.0,
    )
    async with running(supervisor):
        await trio.sleep(60)
        assert gaps(t.times("c", "called")) == [1.0, 2.0, 4.0, 10.0 + 1.0, 2.0, 4.0]


@pytest.mark.anyio
@pytest.mark.autojump
async def test_a_run_shorter_than_reset_after_s_keeps_the_backoff_growing() -> None:
    t = Timeline()
    child = Child("c", t, crash, crash_after(9), crash, serve)
    supervisor = Supervisor(
        name="s",
        children=[child.spec()],
        max_restarts=100,
        period_s=1.0,
        backoff=Backoff(initial_s=1.0, max_s=60.0, jitter_s=0.0),
        reset_after_s=10.0,
    )
    async with running(supervisor):
        await trio.sleep(60)
        assert gaps(t.times("c", "called")) == [1.0, 9.0 + 2.0, 4.0]


@pytest.mark.anyio
@pytest.mark.autojump
async def test_jitter_comes_from_the_supervisors_rng() -> None:
    backoff = Backoff(initial_s=1.0, max_s=60.0, jitter_s=0.5)
    expected = random.Random(42)
    t = Timeline()
    child = Child("c", t, crash, crash, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec()], backoff=backoff, rng=random.Random(42)
    )
    async with running(supervisor):
        await trio.sleep(10)
        want = [backoff.delay(1, expected), backoff.delay(2, expected)]
        assert gaps(t.times("c", "called")) == pytest.approx(want)
