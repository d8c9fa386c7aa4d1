"""Fixtures for adapter tests: the loopback fakes, settings pointing at them, and calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from concierge.protocol import ProviderCall, Role, Turn
from concierge.providers import Adapter, ProviderError
from concierge.settings import ApiKey, ProviderSettings
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.openai_api import FakeOpenAI

KEY = ApiKey(alias="main", secret="sk-test-main")
OTHER_KEY = ApiKey(alias="spare", secret="sk-test-spare")

MakeSettings = Callable[..., ProviderSettings]
MakeCall = Callable[..., ProviderCall]


@pytest.fixture
def make_settings() -> MakeSettings:
    """``make_settings(kind, base_url, name=..., model=..., ...)`` → ``ProviderSettings``."""

    def make(kind: str, base_url: str | None, **overrides: Any) -> ProviderSettings:
        values: dict[str, Any] = {
            "name": kind,
            "kind": kind,
            "model": f"{kind}-test-model",
            "base_url": base_url,
            "keys": (KEY, OTHER_KEY),
            "timeout_s": 5.0,
        }
        values.update(overrides)
        return ProviderSettings(**values)

    return make


@pytest.fixture
def make_call() -> MakeCall:
    """A two-exchange French conversation; override any ``ProviderCall`` field."""

    def make(**overrides: Any) -> ProviderCall:
        values: dict[str, Any] = {
            "correlation_id": "cid-test",
            "system": "Tu es l'accueil de la paroisse.",
            "turns": (
                Turn(role=Role.USER, text="Bonjour"),
                Turn(role=Role.ASSISTANT, text="Bonjour, comment puis-je vous aider ?"),
                Turn(role=Role.USER, text="À quelle heure est la messe dimanche ?"),
            ),
            "max_tokens": 256,
            "timeout_s": 5.0,
            "query": "À quelle heure est la messe dimanche ?",
        }
        values.update(overrides)
        return ProviderCall(**values)

    return make


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic.serve() as fake:
        yield fake


@pytest.fixture
async def gemini_fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini.serve() as fake:
        yield fake


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.serve() as fake:
        yield fake


async def failure_of(adapter: Adapter, make_call: MakeCall, **call: object) -> ProviderError:
    """The classified failure of one call with ``KEY`` (the test fails if it succeeds)."""
    with pytest.raises(ProviderError) as caught:
        await adapter.complete(make_call(**call), KEY)
    return caught.value
