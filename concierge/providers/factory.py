"""Build the adapter a provider's settings ask for, by ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from concierge.providers.adapter import Adapter
from concierge.providers.anthropic import AnthropicAdapter
from concierge.providers.gemini import GeminiAdapter
from concierge.providers.openai_compat import OpenAICompatAdapter, OpenRouterAdapter, is_openrouter
from concierge.settings import ProviderSettings

__all__ = ["OfflineFactory", "build_adapter"]

OfflineFactory = Callable[[ProviderSettings], Adapter]


def build_adapter(
    settings: ProviderSettings, *, offline_factory: OfflineFactory | None = None
) -> Adapter:
    """The adapter for ``settings.kind``; the caller closes it with ``aclose()``.

    ``offline`` answers from the knowledge base, which the caller knows how to load,
    so it comes from ``offline_factory``. OpenRouter (by name or host) gets the
    adapter that can also report key credit.
    """
    match settings.kind:
        case "anthropic":
            return AnthropicAdapter(settings)
        case "gemini":
            return GeminiAdapter(settings)
        case "openai":
            if is_openrouter(settings):
                return OpenRouterAdapter(settings)
            return OpenAICompatAdapter(settings)
        case "offline":
            if offline_factory is None:
                raise ValueError(
                    f"provider {settings.name!r} is of kind offline but no offline adapter factory was given"
                )
            return offline_factory(settings)
        case other:
            raise ValueError(
                f"provider {settings.name!r} has unknown kind {other!r}; expected anthropic, gemini, openai or offline"
            )
