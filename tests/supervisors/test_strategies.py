"""Which siblings a failure takes down and in what order they come back."""

from __future__ import annotations

import pytest
import trio

from supervisors import Backoff, Strategy, Supervisor
from tests.supervisors.scripted import (
    Child,
    Timeline,
    crash,
    crash_after,
    running,
    serve,
    slow_start,
)

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

FAST = Backoff(initial_s=0.5, max_s=0.5, jitter_s=0.0)


def sup(strategy: Strategy, *children: Child) -> Supervisor:
    return Supervisor(
        name="s", children=[c.spec() for c in children], strategy=strategy, backoff=FAST
    )


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    t = Timeline()
    a, b, c = Child("a", t, serve), Child("b", t, crash_after(1), serve), Child("c", t, serve)
    async with running(sup(Strategy.ONE_FOR_ONE, a, b, c)):
        await trio.sleep(10)
        assert (a.runs, b.runs, c.runs) == (1, 2, 1)
        assert t.of("cancelled") == []
        assert t.times("b", "called")[1] == pytest.approx(t.times("b", "raised")[0] + 0.5)


async def test_one_for_all_stops_the_others_in_reverse_then_starts_all_in_order() -> None:
    t = Timeline()
    a, b, c = Child("a", t, serve), Child("b", t, crash_after(1), serve), Child("c", t, serve)
    async with running(sup(Strategy.ONE_FOR_ALL, a, b, c)):
        await trio.sleep(10)
        assert (a.runs, b.runs, c.runs) == (2, 2, 2)
        after_crash = t.events("raised", "cancelled", "called", "started")[6:]
        assert after_crash == [
            ("b", "raised"),
            ("c", "cancelled"),
            ("a", "cancelled"),
            ("a", "called"),
            ("a", "started"),
            ("b", "called"),
            ("b", "started"),
            ("c", "called"),
            ("c", "started"),
        ]


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, crash_after(1), serve)
    c, d = Child("c", t, serve), Child("d", t, serve)
    async with running(sup(Strategy.REST_FOR_ONE, a, b, c, d)):
        await trio.sleep(10)
        assert (a.runs, b.runs, c.runs, d.runs) == (1, 2, 2, 2)
        after_crash = t.events("raised", "cancelled", "called")[4:]
        assert after_crash == [
            ("b", "raised"),
            ("d", "cancelled"),
            ("c", "cancelled"),
            ("b", "called"),
            ("c", "called"),
            ("d", "called"),
        ]


async def test_rest_for_one_on_the_last_child_restarts_only_it() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, crash, serve)
    async with running(sup(Strategy.REST_FOR_ONE, a, b)):
        await trio.sleep(10)
        assert (a.runs, b.runs) == (1, 2)
        assert t.of("cancelled") == []


async def test_a_group_restart_waits_for_each_child_to_be_ready_before_the_next() -> None:
    t = Timeline()
    a = Child("a", t, crash_after(1), slow_start(3))
    b = Child("b", t, serve)
    async with running(sup(Strategy.ONE_FOR_ALL, a, b)):
        await trio.sleep(20)
        a_ready = t.times("a", "started")[1]
        assert t.times("b", "called")[1] == pytest.approx(a_ready)
        assert a_ready == pytest.approx(t.times("a", "called")[1] + 3)


async def test_one_for_one_keeps_serving_siblings_while_one_child_backs_off() -> None:
    t = Timeline()
    slow = Backoff(initial_s=100.0, max_s=100.0, jitter_s=0.0)
    a = Child("a", t, crash_after(1), serve)
    b = Child("b", t, crash_after(2), serve)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec()], backoff=slow)
    async with running(supervisor):
        await trio.sleep(50)
        # a is still waiting out its 100 s; b failed later and is waiting too: neither
        # backoff held up the other's handling.
        assert (a.runs, b.runs) == (1, 1)
        states = {c.id: c.state for c in supervisor.statistics().children}
        assert states == {"a": "restarting", "b": "restarting"}
        await trio.sleep(60)
        assert t.times("a", "called")[1] == pytest.approx(t.times("a", "raised")[0] + 100)
        assert t.times("b", "called")[1] == pytest.approx(t.times("b", "raised")[0] + 100)
