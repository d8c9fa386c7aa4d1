"""Scripted children for supervisor tests: each run follows the next step of a script."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from supervisors import ChildSpec, Restart, Supervisor

Step = Callable[[trio.TaskStatus[Any]], Awaitable[None]]


class Boom(Exception):
    """The failure scripted children raise."""


@attrs.frozen
class Mark:
    at: float
    child: str
    what: str  # called, started, returned, raised, cancelled


@attrs.define
class Timeline:
    """Everything every child did, in order, with trio times."""

    marks: list[Mark] = attrs.field(factory=list)

    def add(self, child: str, what: str) -> None:
        self.marks.append(Mark(trio.current_time(), child, what))

    def of(self, what: str) -> list[str]:
        """Children in the order they did ``what``."""
        return [m.child for m in self.marks if m.what == what]

    def times(self, child: str, what: str) -> list[float]:
        return [m.at for m in self.marks if m.child == child and m.what == what]

    def events(self, *whats: str) -> list[tuple[str, str]]:
        return [(m.child, m.what) for m in self.marks if m.what in whats]


class Child:
    """A child whose n-th run performs ``steps[n]`` (the last step repeats forever)."""

    def __init__(self, name: str, timeline: Timeline, *steps: Step) -> None:
        assert steps, "a scripted child needs at least one step"
        self.name = name
        self.timeline = timeline
        self.steps = steps
        self.runs = 0

    async def start(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        step = self.steps[min(self.runs, len(self.steps) - 1)]
        self.runs += 1
        self.timeline.add(self.name, "called")
        reporting = _Reporting(self, task_status)
        try:
            await step(reporting)
        except trio.Cancelled:
            self.timeline.add(self.name, "cancelled")
            raise
        except BaseException:
            self.timeline.add(self.name, "raised")
            raise
        self.timeline.add(self.name, "returned")

    def spec(self, restart: Restart = Restart.PERMANENT, shutdown_s: float = 5.0) -> ChildSpec:
        return ChildSpec(id=self.name, start=self.start, restart=restart, shutdown_s=shutdown_s)


class _Reporting(trio.TaskStatus[Any]):
    def __init__(self, child: Child, task_status: trio.TaskStatus[Any]) -> None:
        self._child = child
        self._task_status = task_status

    def started(self, value: Any = None) -> None:
        self._child.timeline.add(self._child.name, "started")
        self._task_status.started(value)


async def serve(task_status: trio.TaskStatus[Any]) -> None:
    task_status.started()
    await trio.sleep_forever()


async def crash(task_status: trio.TaskStatus[Any]) -> None:
    task_status.started()
    raise Boom("crashed")


async def fail_start(task_status: trio.TaskStatus[Any]) -> None:
    raise Boom("failed to start")


async def exit_now(task_status: trio.TaskStatus[Any]) -> None:
    task_status.started()


def crash_after(seconds: float) -> Step:
    async def step(task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        await trio.sleep(seconds)
        raise Boom(f"crashed after {seconds}s")

    return step


def exit_after(seconds: float) -> Step:
    async def step(task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        await trio.sleep(seconds)

    return step


def slow_start(seconds: float) -> Step:
    async def step(task_status: trio.TaskStatus[Any]) -> None:
        await trio.sleep(seconds)
        task_status.started()
        await trio.sleep_forever()

    return step


def stubborn(cleanup_s: float) -> Step:
    """Serve; when cancelled, keep cleaning up (shielded) for ``cleanup_s``."""

    async def step(task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup_s)

    return step


@asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[trio.Nursery]:
    """Run ``sup`` until the block ends, then shut it down."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield nursery
        await sup.shutdown()
