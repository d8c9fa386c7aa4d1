"""The store monitor: health check, metrics, and waiting for the store to come back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from concierge.observability import Status
from concierge.store import Monitor, open_store, run_monitor
from tests.stores import store_settings

pytestmark = pytest.mark.anyio


async def test_a_healthy_store_passes_with_its_latency_and_a_closed_one_fails(
    tmp_path: Path,
) -> None:
    monitor = Monitor.of_store(backend="sqlite")
    async with trio.open_nursery() as nursery:
        async with open_store(store_settings(data_dir=tmp_path)) as store:
            await nursery.start(
                partial(
                    run_monitor,
                    ping=store.ping,
                    monitor=monitor,
                    interval_s=0.05,
                    down_interval_s=0.05,
                )
            )
            (check,) = monitor.health_checks()
            assert (check.key, check.status, check.observed_unit) == (
                "sqlite:responseTime",
                Status.PASS,
                "ms",
            )
            assert check.observed_value is not None
            assert check.as_json()["componentType"] == "datastore"
        with trio.fail_after(5):
            await monitor.wait_unavailable()
        (check,) = monitor.health_checks()
        assert check.status is Status.FAIL
        assert check.output is not None
        assert "closed" in check.output
        nursery.cancel_scope.cancel()
    samples = {m.name: m.samples[0].value for m in monitor.metrics()}
    assert samples["concierge_store_up"] == 0.0
    assert samples["concierge_store_outages"] == 1.0


async def test_waiters_are_released_when_the_store_answers_again() -> None:
    monitor = Monitor.of_store(backend="postgres")
    released = trio.Event()
    monitor.record_failure("connection refused")
    assert not monitor.available

    async def drain() -> None:
        await monitor.wait_available()
        released.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        assert not released.is_set()
        monitor.record_success(0.002)
    assert released.is_set()
    assert monitor.available


def test_a_slow_store_warns() -> None:
    monitor = Monitor.of_store(backend="postgres", warn_latency_s=0.1)
    monitor.record_success(0.5)
    (check,) = monitor.health_checks()
    assert (check.status, check.observed_value) == (Status.WARN, 500.0)
