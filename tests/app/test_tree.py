"""The composed daemon in-process: a crashing child is restarted visibly, then escalates."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import trio

from concierge.app.daemon import supervise_until_signalled
from concierge.app.runtime import Runtime, open_runtime
from concierge.app.tree import build_tree
from concierge.observability import Status
from concierge.settings import Settings
from supervisors import ChildSpec, ChildState
from tests.app.running import daemon_settings
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    supervision = {
        "CONCIERGE_MAX_RESTARTS": "3",
        "CONCIERGE_RESTART_PERIOD_S": "60",
        "CONCIERGE_BACKOFF_INITIAL_S": "0.01",
        "CONCIERGE_BACKOFF_MAX_S": "0.05",
    }
    return daemon_settings(tmp_path, **(supervision | extra))


def crashing_child(crashes: list[float], allowed: int) -> ChildSpec:
    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if len(crashes) < allowed:
            crashes.append(trio.current_time())
            raise RuntimeError(f"listener crash #{len(crashes)}")
        await trio.sleep_forever()

    return ChildSpec(id="flaky_listener", start=run)


def running_after_restarts(rt: Runtime, child_id: str, restarts: int) -> bool:
    """Whether a supervisor the health board watches runs ``child_id`` after ``restarts``."""
    children = [c for stats in rt.board.supervisors for c in stats().children if c.id == child_id]
    return any(c.restart_count == restarts and c.state is ChildState.RUNNING for c in children)


async def test_a_crashing_child_is_restarted_and_shows_in_logs_health_and_metrics(
    tmp_path: Path,
) -> None:
    crashes: list[float] = []
    settings = settings_for(tmp_path)
    async with open_runtime(settings, channels=[]) as rt:
        root = build_tree(
            rt, senders=[], listeners=[crashing_child(crashes, allowed=2)], http=False
        )
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(root.run)
                await eventually(
                    lambda: running_after_restarts(rt, "flaky_listener", 2),
                    "the listener to run again after its second restart",
                )
                body, status = rt.board.report()
                metrics = list(rt.board.metrics())
                await root.shutdown()
    restarted = [e for e in logs if e["event"] == "supervisor.child_restarted"]
    assert [e["child"] for e in restarted] == ["flaky_listener", "flaky_listener"]
    assert restarted[0]["log_level"] == "warning"
    assert [e["restart_count"] for e in restarted] == [1, 2]
    assert all(0 < e["backoff_s"] <= 0.05 for e in restarted)
    assert "listener crash #1" in restarted[0]["caused_by"]
    assert status is Status.WARN
    (channels_check,) = body["checks"]["supervisor.channels:restarts"]
    assert channels_check["status"] == "warn"
    assert channels_check["children"][0]["restartCount"] == 2
    restarts = next(m for m in metrics if m.name == "concierge_supervisor_restarts")
    flaky = [s.value for s in restarts.samples if s.labels.get("child") == "flaky_listener"]
    assert flaky == [2.0]


async def test_past_its_intensity_the_tree_gives_up_and_the_daemon_exits_non_zero(
    tmp_path: Path,
) -> None:
    crashes: list[float] = []
    settings = settings_for(tmp_path, CONCIERGE_MAX_RESTARTS="1")
    async with open_runtime(settings, channels=[]) as rt:
        root = build_tree(
            rt, senders=[], listeners=[crashing_child(crashes, allowed=100)], http=False
        )
        with structlog.testing.capture_logs() as logs:
            with trio.fail_after(30):
                code = await supervise_until_signalled(rt, root)
    assert code == 1
    gave_up = [e for e in logs if e["event"] == "supervisor.gave_up"]
    assert [e["supervisor"] for e in gave_up][:1] == ["channels"]
    assert any(e["event"] == "daemon.gave_up" for e in logs)
    # The channels subtree escalated to the root, which gave up too.
    assert "root" in [e["supervisor"] for e in gave_up]


async def test_health_and_metrics_show_spend_against_the_daily_budgets(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CONCIERGE_USER_DAILY_TOKENS="1234")
    async with open_runtime(settings, channels=[]) as rt:
        root = build_tree(rt, senders=[], http=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            body, _status = rt.board.report()
            metrics = {m.name: m for m in rt.board.metrics()}
            await root.shutdown()
    (people,) = body["checks"]["people:dailyTokens"]
    assert people["status"] == "pass"
    assert (people["observedValue"], people["budgetPerPerson"]) == (0, 1234)
    budget = metrics["concierge_person_daily_token_budget"]
    assert [s.value for s in budget.samples] == [1234.0]
    assert "concierge_provider_tokens_today" in metrics
