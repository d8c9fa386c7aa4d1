"""The structured events operators read, their fields and levels, and statistics()."""

from __future__ import annotations

import attrs
import pytest
import trio
from structlog.testing import capture_logs

from supervisors import (
    Backoff,
    ChildState,
    ChildStatistics,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    SupervisorState,
    SupervisorStatistics,
)
from tests.supervisors.scripted import (
    Boom,
    Child,
    Timeline,
    crash_after,
    fail_start,
    running,
    serve,
)

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

STEADY = Backoff(initial_s=2.0, max_s=2.0, jitter_s=0.0)


async def test_a_restart_is_one_warning_with_every_field_and_the_exception() -> None:
    t = Timeline()
    child = Child("worker", t, crash_after(1), serve)
    supervisor = Supervisor(
        name="root", children=[child.spec()], max_restarts=4, period_s=10.0, backoff=STEADY
    )
    with capture_logs() as logs:
        async with running(supervisor):
            await trio.sleep(5)
    (restarted,) = [e for e in logs if e["event"] == "supervisor.child_restarted"]
    exc = restarted.pop("exc_info")
    assert isinstance(exc, Boom)
    assert restarted == {
        "event": "supervisor.child_restarted",
        "log_level": "warning",
        "supervisor": "root",
        "child": "worker",
        "error_context": "child_terminated",
        "restart_type": "permanent",
        "restart_count": 1,
        "restarts_in_window": 1,
        "intensity": 4,
        "period_s": 10.0,
        "backoff_s": 2.0,
        "caused_by": "Boom('crashed after 1s')",
    }


async def test_starts_and_stops_are_info_events() -> None:
    t = Timeline()
    child = Child("worker", t, serve)
    supervisor = Supervisor(name="root", children=[child.spec()])
    with capture_logs() as logs:
        async with running(supervisor):
            pass
    assert [(e["event"], e["log_level"], e.get("error_context")) for e in logs] == [
        ("supervisor.child_started", "info", None),
        ("supervisor.child_exited", "info", "shutdown"),
    ]
    assert logs[0] == {
        "event": "supervisor.child_started",
        "log_level": "info",
        "supervisor": "root",
        "child": "worker",
        "restart_type": "permanent",
        "restart_count": 0,
    }
    assert "exc_info" not in logs[1]


async def test_giving_up_is_one_error_event_naming_the_intensity() -> None:
    t = Timeline()
    child = Child("worker", t, fail_start)
    supervisor = Supervisor(
        name="root", children=[child.spec()], max_restarts=1, period_s=7.0, backoff=STEADY
    )
    with capture_logs() as logs, pytest.raises(RestartIntensityExceeded):
        await supervisor.run()
    levels = [(e["event"], e["log_level"]) for e in logs]
    assert levels == [
        ("supervisor.child_restarted", "warning"),
        ("supervisor.gave_up", "error"),
    ]
    gave_up = logs[1]
    assert isinstance(gave_up.pop("exc_info"), Boom)
    assert gave_up == {
        "event": "supervisor.gave_up",
        "log_level": "error",
        "supervisor": "root",
        "child": "worker",
        "error_context": "reached_max_restart_intensity",
        "restart_type": "permanent",
        "restart_count": 1,
        "restarts_in_window": 2,
        "intensity": 1,
        "period_s": 7.0,
        "caused_by": "Boom('failed to start')",
    }
    assert logs[0]["error_context"] == "start_error"


async def test_cancellation_is_never_logged_as_an_error() -> None:
    t = Timeline()
    a, b = Child("a", t, serve), Child("b", t, serve)
    supervisor = Supervisor(
        name="root", children=[a.spec(), b.spec()], strategy=Strategy.ONE_FOR_ALL
    )
    with capture_logs() as logs, trio.move_on_after(3):
        await supervisor.run()
    assert {e["log_level"] for e in logs} == {"info"}


async def test_a_failed_child_that_is_not_restarted_is_a_warning() -> None:
    t = Timeline()
    child = Child("tmp", t, crash_after(1))
    supervisor = Supervisor(name="root", children=[child.spec(Restart.TEMPORARY)])
    with capture_logs() as logs:
        await supervisor.run()
    exited = logs[-1]
    assert (exited["event"], exited["log_level"]) == ("supervisor.child_exited", "warning")
    assert exited["error_context"] == "child_terminated"
    assert isinstance(exited["exc_info"], Boom)


async def test_statistics_is_a_frozen_snapshot_of_children_and_budget() -> None:
    t = Timeline()
    a = Child("a", t, serve)
    b = Child("b", t, crash_after(1), serve)
    supervisor = Supervisor(
        name="root",
        children=[a.spec(), b.spec(Restart.TRANSIENT)],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=5,
        period_s=10.0,
        backoff=STEADY,
    )
    async with running(supervisor):
        await trio.sleep(5)
        stats = supervisor.statistics()
    assert stats == SupervisorStatistics(
        name="root",
        strategy=Strategy.REST_FOR_ONE,
        state=SupervisorState.RUNNING,
        children=(
            ChildStatistics(
                id="a",
                state=ChildState.RUNNING,
                restart_type=Restart.PERMANENT,
                restart_count=0,
                restarts_in_window=0,
                last_failure=None,
                last_failure_at=None,
                started_at=0.0,
            ),
            ChildStatistics(
                id="b",
                state=ChildState.RUNNING,
                restart_type=Restart.TRANSIENT,
                restart_count=1,
                restarts_in_window=1,
                last_failure="Boom('crashed after 1s')",
                last_failure_at=1.0,
                started_at=3.0,
            ),
        ),
        restarts_in_window=1,
        total_restarts=1,
        max_restarts=5,
        period_s=10.0,
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.state = SupervisorState.STOPPED  # type: ignore[misc]
    assert supervisor.name == "root"


def test_statistics_can_be_read_outside_trio() -> None:
    t = Timeline()
    supervisor = Supervisor(name="root", children=[Child("a", t, serve).spec()])
    stats = supervisor.statistics()
    assert stats.state is SupervisorState.STOPPED
    assert stats.children[0].state is ChildState.STOPPED
