"""Singletons elected among replicas with a PostgreSQL session advisory lock.

The leader holds the lock on a connection of its own; the lock dies with that
session (its process killed, the connection cut, ``pg_terminate_backend``), and the
leader checks every ``check_s`` that it still holds it, stopping its child the moment
it does not. A standby retries every ``retry_s``; having won, it waits ``settle_s``
(longer than the old leader takes to notice) before starting, so two never run at
once while both are alive. No home-made consensus: the database decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.store import Session, Sessions, StoreError, lock_id

log = structlog.get_logger(__name__)


@attrs.define(kw_only=True)
class ElectionStats:
    """Whether this replica leads each singleton, and how often it won or lost."""

    leading: dict[str, bool] = attrs.field(factory=dict)
    won: dict[str, int] = attrs.field(factory=dict)
    lost: dict[str, int] = attrs.field(factory=dict)

    def metrics(self) -> Iterable[Metric]:
        leader = GaugeMetricFamily(
            "concierge_singleton_leader",
            "Whether this replica runs the singleton now (1) or stands by (0)",
            labels=["singleton"],
        )
        for name, leading in sorted(self.leading.items()):
            leader.add_metric([name], 1.0 if leading else 0.0)
        yield leader
        elections = CounterMetricFamily(
            "concierge_singleton_elections",
            "Leaderships this replica won and lost",
            labels=["singleton", "outcome"],
        )
        for name in sorted(self.leading):
            elections.add_metric([name, "won"], self.won.get(name, 0))
            elections.add_metric([name, "lost"], self.lost.get(name, 0))
        yield elections

    def health_checks(self) -> Iterable[Any]:
        return ()


async def run_elected(
    *,
    name: str,
    sessions: Sessions,
    start: Callable[[], Awaitable[Any]],
    stats: ElectionStats,
    retry_s: float = 1.0,
    check_s: float = 1.0,
    settle_s: float | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``start()`` while this replica holds ``name``'s lock; stand by otherwise.

    ``start``'s own failures propagate (its supervisor restarts this actor, and the
    lock goes with the session).
    """
    lock = lock_id(name)
    settle = 3 * check_s if settle_s is None else settle_s
    stats.leading.setdefault(name, False)
    task_status.started()
    while True:
        try:
            async with sessions.open_session(f"elect:{name}") as session:
                while not await session.try_lock(lock):
                    await trio.sleep(retry_s)
                stats.leading[name] = True
                stats.won[name] = stats.won.get(name, 0) + 1
                log.info("election.won", singleton=name, session_pid=session.backend_pid)
                await trio.sleep(settle)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(start)
                    await _hold(session, lock, check_s)
                    nursery.cancel_scope.cancel()
                stats.lost[name] = stats.lost.get(name, 0) + 1
                log.warning("election.lost", singleton=name)
        except StoreError as exc:
            log.warning("election.session_failed", singleton=name, error=str(exc))
        finally:
            stats.leading[name] = False
        await trio.sleep(retry_s)


async def _hold(session: Session, lock: int, check_s: float) -> None:
    """Return as soon as the session no longer holds ``lock`` (or cannot say so in time)."""
    while True:
        await trio.sleep(check_s)
        try:
            with trio.fail_after(check_s * 2):
                if not await session.holds(lock):
                    return
        except (StoreError, trio.TooSlowError):
            return
