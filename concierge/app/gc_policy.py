"""Garbage collection for a daemon that holds thousands of live actors.

CPython collects its older generations after a number of young collections,
that is, by allocation. Under a burst (10,000 new users) every young survivor is
live actor state, so each of those collections walked all of it again for
nothing: 1.2-1.5 s of a 10,000-user burst, measured, while all it found was
about 1,000 objects. Here only the young generation runs by allocation; the
older ones run from a timer (``run_collector``), so a burst costs young
collections only and cyclic garbage still waits at most ``every_s``.
"""

from __future__ import annotations

import gc
import time

import structlog
import trio

log = structlog.get_logger(__name__)

YOUNG_THRESHOLD = 10_000
"""Net allocations between young collections (CPython's default is 700)."""
BY_TIMER_ONLY = 1_000_000_000
"""An older-generation threshold allocation counts never reach: the timer runs them."""


def tune_gc() -> None:
    """Freeze what start-up loaded and leave the older generations to ``run_collector``.

    Modules, settings and the knowledge base live as long as the process: frozen,
    no collection walks them again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, BY_TIMER_ONLY, BY_TIMER_ONLY)


async def run_collector(
    *,
    every_s: float = 30.0,
    full_every: int = 20,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Collect the middle generation every ``every_s``, everything every ``full_every``-th time.

    A collection blocks the event loop while it runs; the slow ones are logged.
    """
    if not every_s > 0:
        raise ValueError(f"every_s must be positive, got {every_s!r}")
    if full_every < 1:
        raise ValueError(f"full_every must be at least 1, got {full_every!r}")
    task_status.started()
    sweeps = 0
    while True:
        await trio.sleep(every_s)
        sweeps += 1
        generation = 2 if sweeps % full_every == 0 else 1
        started = time.perf_counter()
        found = gc.collect(generation)
        took_ms = (time.perf_counter() - started) * 1000
        if took_ms >= 50:
            log.info(
                "gc.slow_collection", generation=generation, found=found, took_ms=round(took_ms)
            )
