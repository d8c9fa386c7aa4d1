"""Keyed children started on demand, each with its own restart budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from supervisors import (
    Backoff,
    ChildAlreadyRunning,
    ChildStartError,
    ChildState,
    KeyedSupervisor,
    MaxChildrenReached,
    Restart,
    SupervisorNotRunning,
    SupervisorState,
)
from tests.supervisors.scripted import Boom

pytestmark = [pytest.mark.anyio, pytest.mark.autojump]

FAST = Backoff(initial_s=1.0, max_s=1.0, jitter_s=0.0)


class Greeters:
    """Keyed children whose n-th run for a key behaves as ``plan[key][n]`` says."""

    def __init__(self, **plan: list[str]) -> None:
        self.plan = plan
        self.runs: Counter[str] = Counter()
        self.cancelled: list[tuple[float, str]] = []

    async def start(self, key: str, greeting: str, *, task_status: trio.TaskStatus[str]) -> None:
        run = self.runs[key]
        self.runs[key] += 1
        steps = self.plan.get(key, ["serve"])
        step = steps[min(run, len(steps) - 1)]
        if step == "fail_start":
            raise Boom(f"{key} cannot start")
        task_status.started(f"{greeting} {key} #{run}")
        try:
            if step == "serve":
                await trio.sleep_forever()
            elif step == "crash":
                await trio.sleep(1)
                raise Boom(f"{key} crashed")
            elif step == "idle":
                await trio.sleep(5)  # then returns: idle children leave
            elif step == "stubborn":
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(100)
        except trio.Cancelled:
            self.cancelled.append((trio.current_time(), key))
            raise


@asynccontextmanager
async def hosting(sup: KeyedSupervisor[str]) -> AsyncIterator[KeyedSupervisor[str]]:
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield sup
        await sup.shutdown()


def keyed(greeters: Greeters, **kwargs: Any) -> KeyedSupervisor[str]:
    kwargs.setdefault("backoff", FAST)
    return KeyedSupervisor[str](name="conversations", start=greeters.start, **kwargs)


async def test_children_start_on_demand_and_return_their_started_value() -> None:
    greeters = Greeters()
    async with hosting(keyed(greeters)) as sup:
        assert len(sup) == 0
        assert await sup.start_child("alice", "hello") == "hello alice #0"
        assert await sup.start_child("bob", "hi") == "hi bob #0"
        assert "alice" in sup
        assert "carol" not in sup
        assert len(sup) == 2
        assert sup.get("alice") == "hello alice #0"
        assert sup.get("carol") is None
        assert [c.id for c in sup.statistics().children] == ["alice", "bob"]


async def test_a_restart_reuses_the_arguments_and_get_returns_the_new_value() -> None:
    greeters = Greeters(alice=["crash", "serve"])
    async with hosting(keyed(greeters)) as sup:
        await sup.start_child("alice", "hello")
        await trio.sleep(1.5)  # crashed at 1 s, backing off until 2 s
        assert "alice" in sup
        assert sup.get("alice") is None
        (stats,) = sup.statistics().children
        assert stats.state is ChildState.RESTARTING
        await trio.sleep(1)
        assert sup.get("alice") == "hello alice #1"
        assert sup.statistics().children[0].restart_count == 1


async def test_a_crashing_key_exhausts_only_its_own_budget() -> None:
    greeters = Greeters(bad=["crash"])
    with capture_logs() as logs:
        async with hosting(keyed(greeters, max_restarts=2, period_s=60.0)) as sup:
            await sup.start_child("good", "hi")
            await sup.start_child("bad", "hi")
            await trio.sleep(30)
            assert "bad" not in sup
            assert sup.get("good") == "hi good #0"
            assert sup.statistics().state is SupervisorState.RUNNING
            assert greeters.runs == Counter(good=1, bad=3)
            # A key given up may be started again later, with a fresh budget.
            assert await sup.start_child("bad", "again") == "again bad #3"
    gave_up = [e for e in logs if e["event"] == "supervisor.gave_up"]
    assert [(e["child"], e["restarts_in_window"], e["log_level"]) for e in gave_up] == [
        ("bad", 3, "error")
    ]


async def test_a_child_that_returns_normally_is_removed_and_can_be_started_again() -> None:
    greeters = Greeters(alice=["idle", "serve"])
    with capture_logs() as logs:
        async with hosting(keyed(greeters)) as sup:
            await sup.start_child("alice", "hello")
            await trio.sleep(6)
            assert "alice" not in sup
            assert len(sup) == 0
            assert await sup.start_child("alice", "welcome back") == "welcome back alice #1"
    exited = [e for e in logs if e["event"] == "supervisor.child_exited"]
    # One child per user: routine starts and exits are debug, not info.
    assert (exited[0]["error_context"], exited[0]["log_level"]) == ("normal", "debug")
    started = [e for e in logs if e["event"] == "supervisor.child_started"]
    assert {e["log_level"] for e in started} == {"debug"}
    assert not [e for e in logs if e["event"] == "supervisor.child_restarted"]


async def test_a_permanent_keyed_child_is_restarted_even_after_returning() -> None:
    greeters = Greeters(alice=["idle", "serve"])
    async with hosting(keyed(greeters, restart=Restart.PERMANENT)) as sup:
        await sup.start_child("alice", "hello")
        await trio.sleep(10)
        assert sup.get("alice") == "hello alice #1"


async def test_a_temporary_keyed_child_is_not_restarted_after_a_crash() -> None:
    greeters = Greeters(alice=["crash", "serve"])
    async with hosting(keyed(greeters, restart=Restart.TEMPORARY)) as sup:
        await sup.start_child("alice", "hello")
        await trio.sleep(10)
        assert "alice" not in sup
        assert greeters.runs["alice"] == 1


async def test_max_children_refuses_new_keys_with_a_clear_error() -> None:
    greeters = Greeters()
    async with hosting(keyed(greeters, max_children=2)) as sup:
        await sup.start_child("a", "hi")
        await sup.start_child("b", "hi")
        with pytest.raises(MaxChildrenReached, match="max_children=2") as info:
            await sup.start_child("c", "hi")
        assert info.value.child == "c"
        await sup.stop_child("a")
        assert await sup.start_child("c", "hi") == "hi c #0"


async def test_starting_a_hosted_key_again_is_refused() -> None:
    greeters = Greeters()
    async with hosting(keyed(greeters)) as sup:
        await sup.start_child("alice", "hello")
        with pytest.raises(ChildAlreadyRunning, match="already hosts child 'alice'") as info:
            await sup.start_child("alice", "hello")
        assert isinstance(info.value, KeyError)
        assert greeters.runs["alice"] == 1


async def test_a_first_start_failure_is_raised_to_the_caller_and_not_retried() -> None:
    greeters = Greeters(alice=["fail_start", "serve"])
    async with hosting(keyed(greeters)) as sup:
        with pytest.raises(ChildStartError, match="could not start child 'alice'") as info:
            await sup.start_child("alice", "hello")
        assert isinstance(info.value.__cause__, Boom)
        assert "alice" not in sup
        await trio.sleep(5)
        assert greeters.runs["alice"] == 1


async def test_a_start_failure_during_a_restart_counts_against_the_key_budget() -> None:
    greeters = Greeters(alice=["crash", "fail_start"])
    with capture_logs() as logs:
        async with hosting(keyed(greeters, max_restarts=3, period_s=60.0)) as sup:
            await sup.start_child("alice", "hello")
            await trio.sleep(30)
            assert "alice" not in sup
    contexts = [e["error_context"] for e in logs if e["event"] == "supervisor.child_restarted"]
    assert contexts == ["child_terminated", "start_error", "start_error"]
    assert greeters.runs["alice"] == 4


async def test_stop_child_stops_and_removes_the_key() -> None:
    greeters = Greeters()
    with capture_logs() as logs:
        async with hosting(keyed(greeters)) as sup:
            await sup.start_child("alice", "hello")
            await sup.stop_child("alice")
            assert "alice" not in sup
            await sup.stop_child("alice")  # gone already: nothing to do
            await sup.stop_child("nobody")
    assert [k for _, k in greeters.cancelled] == ["alice"]
    exited = [e for e in logs if e["event"] == "supervisor.child_exited"]
    assert [(e["error_context"], e["log_level"]) for e in exited] == [("shutdown", "debug")]


async def test_stop_child_during_backoff_removes_it_without_restarting() -> None:
    greeters = Greeters(alice=["crash", "serve"])
    slow = Backoff(initial_s=30.0, max_s=30.0, jitter_s=0.0)
    async with hosting(keyed(greeters, backoff=slow)) as sup:
        await sup.start_child("alice", "hello")
        await trio.sleep(5)
        with trio.fail_after(0.1):
            await sup.stop_child("alice")
        assert "alice" not in sup
        await trio.sleep(60)
        assert greeters.runs["alice"] == 1


async def test_shutdown_stops_every_child_at_once_and_refuses_new_ones() -> None:
    greeters = Greeters()
    sup = keyed(greeters)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for key in ("a", "b", "c"):
            await sup.start_child(key, "hi")
        await trio.sleep(1)
        await sup.shutdown()
        await sup.shutdown()
    assert sorted(k for _, k in greeters.cancelled) == ["a", "b", "c"]
    assert len({at for at, _ in greeters.cancelled}) == 1
    assert len(sup) == 0
    assert sup.statistics().state is SupervisorState.STOPPED
    with pytest.raises(SupervisorNotRunning):
        await sup.start_child("d", "hi")


async def test_shutdown_abandons_a_child_that_outlives_shutdown_s() -> None:
    greeters = Greeters(stuck=["stubborn"])
    sup = keyed(greeters, shutdown_s=2.0)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child("stuck", "hi")
            await sup.start_child("fine", "hi")
            asked = trio.current_time()
            await sup.shutdown()
            assert trio.current_time() - asked == pytest.approx(2)
    timeouts = [e["child"] for e in logs if e.get("error_context") == "shutdown_timeout"]
    assert timeouts == ["stuck"]


async def test_start_child_before_run_or_with_a_bad_key_is_refused() -> None:
    sup = keyed(Greeters())
    with pytest.raises(SupervisorNotRunning, match="'conversations' is stopped"):
        await sup.start_child("alice", "hello")
    async with hosting(sup):
        with pytest.raises(ValueError, match="key must be a non-empty string"):
            await sup.start_child("", "hello")


def test_bad_keyed_settings_are_refused_with_their_name() -> None:
    greeters = Greeters()
    with pytest.raises(ValueError, match="max_children"):
        keyed(greeters, max_children=0)
    with pytest.raises(ValueError, match="shutdown_s"):
        keyed(greeters, shutdown_s=0)


async def test_start_child_soon_hosts_the_key_at_once_and_get_answers_once_it_started() -> None:
    greeters = Greeters()
    async with hosting(keyed(greeters)) as sup:
        sup.start_child_soon("u1", "hello")
        assert "u1" in sup
        assert sup.get("u1") is None  # hosted, not started yet: nothing was awaited
        with pytest.raises(ChildAlreadyRunning):
            sup.start_child_soon("u1", "hello")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.get("u1") == "hello u1 #0"


async def test_start_child_soon_refuses_at_once_and_a_failed_first_start_is_reported() -> None:
    greeters = Greeters(u1=["fail_start"])
    async with hosting(keyed(greeters, max_children=1)) as sup:
        with capture_logs() as logs:
            sup.start_child_soon("u1", "hello")
            with pytest.raises(MaxChildrenReached):
                sup.start_child_soon("u2", "hello")
            await trio.testing.wait_all_tasks_blocked()
        assert "u1" not in sup
        assert greeters.runs["u1"] == 1  # not retried
        exited = [e for e in logs if e["event"] == "supervisor.child_exited"]
        assert [e["child"] for e in exited] == ["u1"]
        sup.start_child_soon("u2", "hello")  # the failed key freed its place
        await trio.testing.wait_all_tasks_blocked()
        assert sup.get("u2") == "hello u2 #0"
