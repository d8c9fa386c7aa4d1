"""OTP's restart types: permanent always, transient on error, temporary never."""

from __future__ import annotations

import pytest
import trio

from supervisors import Backoff, ChildState, Restart, Strategy, Supervisor
from tests.supervisors.scripted import (
    Child,
    Step,
    Timeline,
    crash,
    crash_after,
    exit_now,
    running,
    serve,
)

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

FAST = Backoff(initial_s=0.5, max_s=0.5, jitter_s=0.0)


def states(supervisor: Supervisor) -> dict[str, ChildState]:
    return {c.id: c.state for c in supervisor.statistics().children}


@pytest.mark.parametrize("first_run", [crash, exit_now], ids=["after_error", "after_return"])
async def test_permanent_child_is_restarted(first_run: Step) -> None:
    t = Timeline()
    child = Child("p", t, first_run, serve)
    supervisor = Supervisor(name="s", children=[child.spec(Restart.PERMANENT)], backoff=FAST)
    async with running(supervisor):
        await trio.sleep(5)
        assert child.runs == 2
        assert states(supervisor) == {"p": ChildState.RUNNING}


async def test_transient_child_is_restarted_after_an_error() -> None:
    t = Timeline()
    child = Child("t", t, crash, serve)
    supervisor = Supervisor(name="s", children=[child.spec(Restart.TRANSIENT)], backoff=FAST)
    async with running(supervisor):
        await trio.sleep(5)
        assert child.runs == 2


async def test_transient_child_that_returns_stays_stopped() -> None:
    t = Timeline()
    child = Child("t", t, exit_now, serve)
    other = Child("o", t, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec(Restart.TRANSIENT), other.spec()], backoff=FAST
    )
    async with running(supervisor):
        await trio.sleep(5)
        assert child.runs == 1
        assert states(supervisor) == {"t": ChildState.STOPPED, "o": ChildState.RUNNING}


async def test_temporary_child_that_fails_is_not_restarted() -> None:
    t = Timeline()
    child = Child("tmp", t, crash, serve)
    other = Child("o", t, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec(Restart.TEMPORARY), other.spec()], backoff=FAST
    )
    async with running(supervisor):
        await trio.sleep(5)
        assert child.runs == 1
        assert states(supervisor) == {"tmp": ChildState.FAILED, "o": ChildState.RUNNING}
        assert supervisor.statistics().total_restarts == 0


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_temporary_sibling_stopped_by_a_group_restart_is_not_restarted(
    strategy: Strategy,
) -> None:
    t = Timeline()
    failing = Child("f", t, crash_after(1), serve)
    tmp = Child("tmp", t, serve)
    perm = Child("perm", t, serve)
    supervisor = Supervisor(
        name="s",
        children=[failing.spec(), tmp.spec(Restart.TEMPORARY), perm.spec()],
        strategy=strategy,
        backoff=FAST,
    )
    async with running(supervisor):
        await trio.sleep(5)
        assert (failing.runs, tmp.runs, perm.runs) == (2, 1, 2)
        assert t.of("cancelled") == ["perm", "tmp"]
        assert states(supervisor) == {
            "f": ChildState.RUNNING,
            "tmp": ChildState.STOPPED,
            "perm": ChildState.RUNNING,
        }


async def test_transient_sibling_is_restarted_with_its_group() -> None:
    t = Timeline()
    failing = Child("f", t, crash_after(1), serve)
    sib = Child("sib", t, serve)
    supervisor = Supervisor(
        name="s",
        children=[failing.spec(), sib.spec(Restart.TRANSIENT)],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=FAST,
    )
    async with running(supervisor):
        await trio.sleep(5)
        assert sib.runs == 2
        assert supervisor.statistics().children[1].restart_count == 1


async def test_run_returns_once_every_child_ended_for_good() -> None:
    t = Timeline()
    a, b = Child("a", t, exit_now), Child("b", t, crash)
    supervisor = Supervisor(
        name="s", children=[a.spec(Restart.TRANSIENT), b.spec(Restart.TEMPORARY)], backoff=FAST
    )
    with trio.fail_after(1):
        await supervisor.run()
    assert states(supervisor) == {"a": ChildState.STOPPED, "b": ChildState.FAILED}
    assert supervisor.statistics().state == "stopped"
