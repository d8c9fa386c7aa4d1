"""Ordered start, start errors, ordered shutdown with timeouts, and what is never a failure."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from supervisors import (
    Backoff,
    ChildSpec,
    ChildState,
    Restart,
    RestartIntensityExceeded,
    Supervisor,
    SupervisorState,
)
from tests.supervisors.scripted import (
    Boom,
    Child,
    Timeline,
    crash,
    fail_start,
    running,
    serve,
    slow_start,
    stubborn,
)

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

STEADY = Backoff(initial_s=1.0, max_s=10.0, jitter_s=0.0)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_children_start_in_order_each_after_the_previous_is_ready() -> None:
    t = Timeline()
    a, b, c = Child("a", t, slow_start(2)), Child("b", t, slow_start(3)), Child("c", t, serve)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec(), c.spec()])
    async with trio.open_nursery() as nursery:
        begun = trio.current_time()
        assert supervisor.statistics().state is SupervisorState.STOPPED
        await nursery.start(supervisor.run)
        assert trio.current_time() - begun == pytest.approx(5)
        assert t.events("called", "started") == [
            ("a", "called"),
            ("a", "started"),
            ("b", "called"),
            ("b", "started"),
            ("c", "called"),
            ("c", "started"),
        ]
        assert supervisor.statistics().state is SupervisorState.RUNNING
        await supervisor.shutdown()


async def test_a_start_error_is_retried_with_backoff_before_the_next_child_starts() -> None:
    t = Timeline()
    flaky = Child("flaky", t, fail_start, fail_start, serve)
    later = Child("later", t, serve)
    supervisor = Supervisor(
        name="s", children=[flaky.spec(), later.spec()], backoff=STEADY, max_restarts=5
    )
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            begun = trio.current_time()
            await nursery.start(supervisor.run)
            assert trio.current_time() - begun == pytest.approx(1 + 2)
            assert t.times("later", "called") == [pytest.approx(begun + 3)]
            await supervisor.shutdown()
    restarted = events(logs, "supervisor.child_restarted")
    assert [e["error_context"] for e in restarted] == ["start_error", "start_error"]
    assert [e["backoff_s"] for e in restarted] == [1.0, 2.0]


async def test_start_errors_past_the_intensity_fail_the_start_of_run() -> None:
    t = Timeline()
    first = Child("first", t, serve)
    broken = Child("broken", t, fail_start)
    never = Child("never", t, serve)
    supervisor = Supervisor(
        name="s", children=[first.spec(), broken.spec(), never.spec()], max_restarts=2
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(RestartIntensityExceeded) as info:
            await nursery.start(supervisor.run)
    assert isinstance(info.value.__cause__, Boom)
    assert broken.runs == 3
    assert never.runs == 0
    assert t.of("cancelled") == ["first"]


async def test_a_child_returning_before_started_is_a_start_error() -> None:
    async def forgetful(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        return

    t = Timeline()
    child = Child("forgetful", t, lambda status: forgetful(task_status=status))
    supervisor = Supervisor(name="s", children=[child.spec(Restart.TEMPORARY)])
    with capture_logs() as logs:
        await supervisor.run()
    (stats,) = supervisor.statistics().children
    assert stats.state is ChildState.FAILED
    assert stats.last_failure is not None
    assert "without calling task_status.started()" in stats.last_failure
    (exited,) = events(logs, "supervisor.child_exited")
    assert exited["error_context"] == "start_error"


async def test_shutdown_stops_children_in_reverse_start_order() -> None:
    t = Timeline()
    a, b, c = Child("a", t, serve), Child("b", t, serve), Child("c", t, serve)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec(), c.spec()])
    async with running(supervisor):
        await trio.sleep(1)
    assert t.of("cancelled") == ["c", "b", "a"]
    stats = supervisor.statistics()
    assert stats.state is SupervisorState.STOPPED
    assert {c.state for c in stats.children} == {ChildState.STOPPED}
    assert stats.total_restarts == 0


async def test_shutdown_waits_for_each_childs_cleanup_before_stopping_the_next() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, stubborn(2))
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec(shutdown_s=5)])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        asked = trio.current_time()
        await supervisor.shutdown()
        assert trio.current_time() - asked == pytest.approx(2)
    assert t.times("a", "cancelled") == [pytest.approx(asked + 2)]


async def test_a_child_outliving_its_shutdown_timeout_is_abandoned_and_shutdown_goes_on() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, stubborn(100))
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec(shutdown_s=3)])
    returned: list[float] = []

    async def run_and_note(task_status: trio.TaskStatus[None]) -> None:
        await supervisor.run(task_status=task_status)
        returned.append(trio.current_time())

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_and_note)
            asked = trio.current_time()
            await supervisor.shutdown()
            assert trio.current_time() - asked == pytest.approx(3)
            assert t.times("a", "cancelled") == [pytest.approx(asked + 3)]
    # trio cannot kill a task: run() returns once the abandoned child finally ends.
    assert returned == [pytest.approx(asked + 100)]
    timeouts = [e for e in events(logs, "supervisor.child_exited") if e["child"] == "b"]
    assert [(e["error_context"], e["log_level"]) for e in timeouts] == [
        ("shutdown_timeout", "warning")
    ]


async def test_a_nested_supervisor_stops_its_own_children_in_order_when_its_parent_stops() -> None:
    t = Timeline()
    x, a, b = Child("x", t, serve), Child("a", t, serve), Child("b", t, stubborn(1))
    inner = Supervisor(name="inner", children=[a.spec(), b.spec()])
    outer = Supervisor(
        name="outer",
        children=[x.spec(), ChildSpec(id="inner", start=inner.run, shutdown_s=30)],
    )
    async with running(outer):
        await trio.sleep(1)
        assert inner.statistics().state is SupervisorState.RUNNING
        asked = trio.current_time()
    assert t.of("cancelled") == ["b", "a", "x"]
    # b takes 1 s to clean up; only then is a cancelled, and x after the whole inner tree.
    assert t.times("a", "cancelled") == [pytest.approx(asked + 1)]
    assert t.times("x", "cancelled") == [pytest.approx(asked + 1)]
    assert inner.statistics().state is SupervisorState.STOPPED


async def test_shutdown_is_idempotent_and_can_come_from_any_task() -> None:
    t = Timeline()
    a = Child("a", t, serve)
    supervisor = Supervisor(name="s", children=[a.spec()])
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        async with trio.open_nursery() as callers:
            callers.start_soon(supervisor.shutdown)
            callers.start_soon(supervisor.shutdown)
        await supervisor.shutdown()
    assert t.of("cancelled") == ["a"]


async def test_shutdown_from_one_of_its_own_children_stops_everything() -> None:
    t = Timeline()
    supervisor: Supervisor

    async def quitter(status: trio.TaskStatus[Any]) -> None:
        status.started()
        await trio.sleep(1)
        await supervisor.shutdown()

    a, b = Child("a", t, serve), Child("quitter", t, quitter)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec()])
    with trio.fail_after(10):
        await supervisor.run()
    assert t.of("cancelled") == ["quitter", "a"]


async def test_a_supervisor_shut_down_before_run_does_not_start_anything() -> None:
    t = Timeline()
    a = Child("a", t, serve)
    supervisor = Supervisor(name="s", children=[a.spec()])
    await supervisor.shutdown()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
    assert a.runs == 0


async def test_shutdown_while_children_are_starting_ends_run_quietly() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, slow_start(10))
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec()])
    returned_from_start: list[bool] = []

    async def start_it(nursery: trio.Nursery) -> None:
        await nursery.start(supervisor.run)  # no "exited without calling started()"
        returned_from_start.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start_it, nursery)
        await trio.sleep(1)
        assert supervisor.statistics().state is SupervisorState.STARTING
        await supervisor.shutdown()
    assert returned_from_start == [True]
    assert t.of("cancelled") == ["b", "a"]
    assert t.of("started") == ["a"]


async def test_cancelling_run_stops_the_children_in_reverse_order_without_restarts() -> None:
    t = Timeline()
    a, b, c = Child("a", t, serve), Child("b", t, stubborn(1)), Child("c", t, serve)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec(), c.spec()])
    with capture_logs() as logs, trio.move_on_after(5):
        await supervisor.run()
    assert t.of("cancelled") == ["c", "b", "a"]
    assert t.times("a", "cancelled") == [pytest.approx(t.times("c", "cancelled")[0] + 1)]
    assert events(logs, "supervisor.child_restarted") == []
    assert {e["log_level"] for e in events(logs, "supervisor.child_exited")} == {"info"}


async def test_keyboard_interrupt_from_a_child_propagates_and_is_not_restarted() -> None:
    async def interrupted(status: trio.TaskStatus[Any]) -> None:
        status.started()
        await trio.sleep(1)
        raise KeyboardInterrupt

    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, interrupted, serve)
    supervisor = Supervisor(name="s", children=[a.spec(), b.spec()])
    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        await supervisor.run()
    assert (a.runs, b.runs) == (1, 1)
    assert t.of("cancelled") == ["a"]


async def test_keyboard_interrupt_inside_a_childs_group_propagates() -> None:
    async def group_interrupt(status: trio.TaskStatus[Any]) -> None:
        status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep(1)
            raise KeyboardInterrupt

    t = Timeline()
    child = Child("b", t, group_interrupt, serve)
    supervisor = Supervisor(name="s", children=[child.spec()])
    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        await supervisor.run()
    assert child.runs == 1


async def test_a_group_of_errors_from_a_childs_nursery_is_one_failure() -> None:
    async def two_errors(status: trio.TaskStatus[Any]) -> None:
        status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash, trio.TASK_STATUS_IGNORED)
            nursery.start_soon(crash, trio.TASK_STATUS_IGNORED)

    t = Timeline()
    child = Child("c", t, two_errors, serve)
    supervisor = Supervisor(name="s", children=[child.spec()], backoff=STEADY)
    async with running(supervisor):
        await trio.sleep(5)
        stats = supervisor.statistics()
        assert stats.total_restarts == 1
        assert stats.children[0].last_failure is not None
        assert stats.children[0].last_failure.startswith("ExceptionGroup(")


async def test_an_error_raised_while_stopping_is_a_shutdown_error_not_a_restart() -> None:
    async def messy(status: trio.TaskStatus[Any]) -> None:
        status.started()

        async def cleanup_fails() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise Boom("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cleanup_fails)
            await trio.sleep_forever()

    t = Timeline()
    child = Child("messy", t, messy)
    supervisor = Supervisor(name="s", children=[child.spec()])
    with capture_logs() as logs:
        async with running(supervisor):
            await trio.sleep(1)
    (exited,) = events(logs, "supervisor.child_exited")
    assert exited["error_context"] == "shutdown_error"
    assert exited["log_level"] == "warning"
    assert exited["caused_by"].startswith("ExceptionGroup(")
    assert child.runs == 1
    assert supervisor.statistics().children[0].state is ChildState.STOPPED


async def test_run_twice_at_once_is_refused() -> None:
    t = Timeline()
    supervisor = Supervisor(name="s", children=[Child("a", t, serve).spec()])
    async with running(supervisor):
        with pytest.raises(RuntimeError, match="already running"):
            await supervisor.run()


def test_bad_settings_are_refused_with_their_name() -> None:
    t = Timeline()
    spec = Child("a", t, serve).spec()
    with pytest.raises(ValueError, match="duplicate child id 'a'"):
        Supervisor(name="s", children=[spec, spec])
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor(name="s", children=[spec], max_restarts=-1)
    with pytest.raises(ValueError, match="period_s"):
        Supervisor(name="s", children=[spec], period_s=0)
    with pytest.raises(ValueError, match="name"):
        Supervisor(name="", children=[spec])
    with pytest.raises(ValueError, match="shutdown_s"):
        Child("a", t, serve).spec(shutdown_s=0)
