"""Shared test wiring: every async test runs on trio through anyio's pytest plugin.

Mark a test ``@pytest.mark.autojump`` to run it on trio's MockClock with
``autojump_threshold=0``: sleeps, timeouts and backoff then cost no wall time.
"""

from __future__ import annotations

import pytest
import trio.testing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "autojump: run on trio's MockClock(autojump_threshold=0)")


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.node.get_closest_marker("autojump") is not None:
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "trio"
