"""The older generations run from a timer, not from allocation counts."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio

from concierge.app.gc_policy import BY_TIMER_ONLY, YOUNG_THRESHOLD, run_collector, tune_gc


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


@pytest.fixture
def tuned_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        tune_gc()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _garbage_in_the_middle_generation() -> weakref.ref[Node]:
    node = Node()
    gc.collect(0)  # alive now: promoted out of the young generation
    ref = weakref.ref(node)
    del node
    gc.collect(0)  # young collections do not look at it any more
    return ref


def test_tune_gc_freezes_start_up_and_leaves_older_generations_to_the_timer(
    tuned_gc: None,
) -> None:
    assert gc.get_threshold() == (YOUNG_THRESHOLD, BY_TIMER_ONLY, BY_TIMER_ONLY)
    assert gc.get_freeze_count() > 0
    ref = _garbage_in_the_middle_generation()
    for _ in range(50):  # plenty of allocations: no older collection follows from them
        [Node() for _ in range(YOUNG_THRESHOLD)]
        gc.collect(0)
    assert ref() is not None


@pytest.mark.anyio
@pytest.mark.autojump
async def test_the_collector_frees_older_cyclic_garbage_on_its_timer(tuned_gc: None) -> None:
    ref = _garbage_in_the_middle_generation()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_collector)
        await trio.sleep(29)
        assert ref() is not None
        await trio.sleep(2)
        assert ref() is None
        nursery.cancel_scope.cancel()


@pytest.mark.anyio
async def test_bad_collector_settings_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="every_s"):
        await run_collector(every_s=0)
    with pytest.raises(ValueError, match="full_every"):
        await run_collector(full_every=0)
