"""Restart intensity: max_restarts within period_s pass, one more gives up and escalates."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from supervisors import (
    Backoff,
    ChildSpec,
    ChildState,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    SupervisorState,
)
from tests.supervisors.scripted import Boom, Child, Timeline, crash, crash_after, running, serve

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

FAST = Backoff(initial_s=0.1, max_s=0.1, jitter_s=0.0)


async def test_exactly_max_restarts_within_the_period_are_allowed() -> None:
    t = Timeline()
    child = Child("c", t, crash, crash, crash, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec()], max_restarts=3, period_s=5.0, backoff=FAST
    )
    async with running(supervisor):
        await trio.sleep(2)
        stats = supervisor.statistics()
        assert child.runs == 4
        assert stats.state is SupervisorState.RUNNING
        assert stats.restarts_in_window == 3
        assert stats.total_restarts == 3


async def test_one_restart_more_than_max_restarts_gives_up_from_the_last_error() -> None:
    t = Timeline()
    child = Child("c", t, crash, crash, crash, crash, serve)
    bystander = Child("by", t, serve)
    supervisor = Supervisor(
        name="s",
        children=[bystander.spec(), child.spec()],
        max_restarts=3,
        period_s=5.0,
        backoff=FAST,
    )
    with pytest.raises(RestartIntensityExceeded) as info:
        await supervisor.run()
    assert child.runs == 4
    assert (info.value.supervisor, info.value.child, info.value.restarts) == ("s", "c", 4)
    assert isinstance(info.value.__cause__, Boom)
    assert "'s' gave up" in str(info.value)
    assert t.of("cancelled") == ["by"]
    stats = supervisor.statistics()
    assert stats.state is SupervisorState.GAVE_UP
    assert {c.id: c.state for c in stats.children} == {
        "by": ChildState.STOPPED,
        "c": ChildState.FAILED,
    }


async def test_restarts_older_than_the_period_leave_the_window() -> None:
    t = Timeline()
    # Ten crashes, each after running 3 s: never more than 2 inside a 5 s window.
    child = Child("c", t, *[crash_after(3)] * 10, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec()], max_restarts=2, period_s=5.0, backoff=FAST
    )
    async with running(supervisor):
        await trio.sleep(60)
        assert child.runs == 11
        assert supervisor.statistics().state is SupervisorState.RUNNING
        assert supervisor.statistics().total_restarts == 10


async def test_max_restarts_zero_gives_up_on_the_first_failure() -> None:
    t = Timeline()
    child = Child("c", t, crash, serve)
    supervisor = Supervisor(name="s", children=[child.spec()], max_restarts=0, backoff=FAST)
    with pytest.raises(RestartIntensityExceeded):
        await supervisor.run()
    assert child.runs == 1


async def test_normal_exits_of_permanent_children_count_too() -> None:
    t = Timeline()
    child = Child("c", t, _returns)
    supervisor = Supervisor(name="s", children=[child.spec()], max_restarts=2, backoff=FAST)
    with pytest.raises(RestartIntensityExceeded) as info:
        await supervisor.run()
    assert child.runs == 3
    assert info.value.__cause__ is None


async def _returns(task_status: trio.TaskStatus[None]) -> None:
    task_status.started()


async def test_the_budget_is_shared_by_all_children_of_a_supervisor() -> None:
    t = Timeline()
    a, b = Child("a", t, crash, serve), Child("b", t, crash, crash, serve)
    supervisor = Supervisor(
        name="s", children=[a.spec(), b.spec()], max_restarts=2, period_s=5.0, backoff=FAST
    )
    with pytest.raises(RestartIntensityExceeded) as info:
        await supervisor.run()
    assert info.value.child == "b"


async def test_a_nested_supervisor_giving_up_is_a_failure_of_its_parent() -> None:
    t = Timeline()
    worker = Child("worker", t, crash)
    inner = Supervisor(
        name="inner", children=[worker.spec()], max_restarts=1, period_s=5.0, backoff=FAST
    )
    sibling = Child("sibling", t, serve)
    outer = Supervisor(
        name="outer",
        children=[sibling.spec(), ChildSpec(id="inner", start=inner.run, shutdown_s=30.0)],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=1,
        period_s=5.0,
        backoff=FAST,
    )
    with capture_logs() as logs, pytest.raises(RestartIntensityExceeded) as info:
        await outer.run()
    # inner gives up twice (each time after 1 restart); outer restarts it once, then gives up.
    assert worker.runs == 4
    assert (info.value.supervisor, info.value.child) == ("outer", "inner")
    cause = info.value.__cause__
    assert isinstance(cause, RestartIntensityExceeded)
    assert cause.supervisor == "inner"
    assert isinstance(cause.__cause__, Boom)
    gave_up = [(e["supervisor"], e["child"]) for e in logs if e["event"] == "supervisor.gave_up"]
    assert gave_up == [("inner", "worker"), ("inner", "worker"), ("outer", "inner")]
    restarted = [
        e for e in logs if e["event"] == "supervisor.child_restarted" and e["supervisor"] == "outer"
    ]
    assert [e["child"] for e in restarted] == ["inner"]
    assert restarted[0]["caused_by"].startswith("RestartIntensityExceeded(")
    assert sibling.runs == 1
    assert t.of("cancelled") == ["sibling"]


async def test_each_run_starts_with_a_fresh_budget() -> None:
    t = Timeline()
    child = Child("c", t, crash, crash, serve)
    supervisor = Supervisor(
        name="s", children=[child.spec(Restart.PERMANENT)], max_restarts=1, backoff=FAST
    )
    with pytest.raises(RestartIntensityExceeded):
        await supervisor.run()
    async with running(supervisor):
        await trio.sleep(1)
        assert supervisor.statistics().state is SupervisorState.RUNNING
        assert child.runs == 3
