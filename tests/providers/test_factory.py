"""build_adapter picks the adapter by kind and hands offline to its factory."""

from __future__ import annotations

import pytest

from concierge.protocol import ProviderCall, ProviderReply
from concierge.providers import Adapter, build_adapter
from concierge.providers.anthropic import AnthropicAdapter
from concierge.providers.gemini import GeminiAdapter
from concierge.providers.openai_compat import OpenAICompatAdapter, OpenRouterAdapter
from concierge.settings import ApiKey, ProviderSettings
from tests.providers.conftest import MakeSettings

pytestmark = pytest.mark.anyio


class _Offline:
    def __init__(self, settings: ProviderSettings) -> None:
        self.name, self.kind, self.model = settings.name, "offline", settings.model

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        return ProviderReply(text="kb", model=self.model)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("kind", "name", "base_url", "expected"),
    [
        ("anthropic", "anthropic", "https://api.anthropic.com", AnthropicAdapter),
        ("anthropic", "glm_claude", "https://api.z.ai/api/anthropic", AnthropicAdapter),
        ("gemini", "gemini", None, GeminiAdapter),
        ("openai", "openrouter", "https://openrouter.ai/api/v1", OpenRouterAdapter),
        ("openai", "router2", "https://openrouter.ai/api/v1", OpenRouterAdapter),
        ("openai", "glm", "https://api.z.ai/api/paas/v4", OpenAICompatAdapter),
    ],
)
async def test_kind_picks_the_adapter(
    make_settings: MakeSettings, kind: str, name: str, base_url: str | None, expected: type[Adapter]
) -> None:
    adapter = build_adapter(make_settings(kind, base_url, name=name))
    try:
        assert type(adapter) is expected
        assert adapter.name == name
        assert adapter.kind == kind
    finally:
        await adapter.aclose()


def test_only_openrouter_offers_key_credit(make_settings: MakeSettings) -> None:
    assert hasattr(OpenRouterAdapter, "fetch_key_info")
    assert not hasattr(OpenAICompatAdapter, "fetch_key_info")


def test_offline_comes_from_the_given_factory(make_settings: MakeSettings) -> None:
    settings = make_settings("offline", None, model="knowledge-base")
    adapter = build_adapter(settings, offline_factory=_Offline)
    assert isinstance(adapter, _Offline)
    assert adapter.model == "knowledge-base"


def test_offline_without_a_factory_is_refused(make_settings: MakeSettings) -> None:
    with pytest.raises(ValueError, match="offline"):
        build_adapter(make_settings("offline", None))


def test_unknown_kind_is_refused_with_the_kinds_that_exist(make_settings: MakeSettings) -> None:
    with pytest.raises(ValueError, match="anthropic, gemini, openai or offline"):
        build_adapter(make_settings("cohere", None))


def test_openai_kind_needs_a_base_url(make_settings: MakeSettings) -> None:
    with pytest.raises(ValueError, match="base URL"):
        build_adapter(make_settings("openai", None, name="local"))
