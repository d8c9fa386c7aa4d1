"""Shared test wiring: every async test runs on trio through anyio's pytest plugin.

Mark a test ``@pytest.mark.autojump`` to run it on trio's MockClock with
``autojump_threshold=0``: sleeps, timeouts and backoff then cost no wall time.
``@pytest.mark.autojump(threshold=0.05)`` jumps only after that much real idle
time: for tests whose code waits on worker threads (SQLite), which a zero
threshold would see as idle and race past (a loaded machine makes that likely).
"""

from __future__ import annotations

import os

import hypothesis
import pytest
import trio.testing

from concierge.domain import KnowledgeBase, Languages, PromptBook, TriageRules
from tests import shipped

# CI is a shared 2-core machine: no per-example deadline (timing is not what property
# tests check), and a fixed seed so a red run is the same red run when repeated.
hypothesis.settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.register_profile("dev", deadline=None)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "autojump(threshold=0): run on trio's MockClock with that autojump threshold"
    )


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    marker = request.node.get_closest_marker("autojump")
    if marker is not None:
        threshold = float(marker.kwargs.get("threshold", 0.0))
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=threshold)})
    return "trio"


@pytest.fixture(scope="session")
def languages() -> Languages:
    return shipped.languages()


@pytest.fixture(scope="session")
def knowledge() -> KnowledgeBase:
    return shipped.knowledge()


@pytest.fixture(scope="session")
def triage_rules() -> TriageRules:
    return shipped.triage()


@pytest.fixture(scope="session")
def prompt_book() -> PromptBook:
    return shipped.prompts()
