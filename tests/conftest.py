"""Shared test wiring: every async test runs on trio through anyio's pytest plugin.

Mark a test ``@pytest.mark.autojump`` to run it on trio's MockClock with
``autojump_threshold=0``: sleeps, timeouts and backoff then cost no wall time.
``@pytest.mark.autojump(threshold=0.05)`` jumps only after that much real idle
time: for tests whose code waits on worker threads (SQLite), which a zero
threshold would see as idle and race past (a loaded machine makes that likely).
"""

from __future__ import annotations

import pytest
import trio.testing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "autojump(threshold=0): run on trio's MockClock with that autojump threshold")


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    marker = request.node.get_closest_marker("autojump")
    if marker is not None:
        threshold = float(marker.kwargs.get("threshold", 0.0))
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=threshold)})
    return "trio"
