"""What every network adapter says about itself, and the HTTP client limits they share.

The pool reads ``name``, ``kind`` and ``model`` from each adapter; for network
adapters all three come from the provider's settings, so they live here once.
"""

from __future__ import annotations

from typing import ClassVar

import httpx2

from concierge.settings import ProviderSettings

MAX_CONNECTIONS = 256
"""Above httpx's default of 100: the pool never serialises calls, and a burst of turns
would otherwise queue inside the client."""
MAX_KEEPALIVE = MAX_CONNECTIONS
"""All of them: under load, closing idle connections to open new ones the next moment
was a large part of a turn's CPU (their TCP and, for real providers, TLS setup)."""
CONNECT_TIMEOUT_S = 5.0


class ConfiguredAdapter:
    KIND: ClassVar[str]

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings

    @property
    def settings(self) -> ProviderSettings:
        return self._settings

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def model(self) -> str:
        return self._settings.model


def sdk_http_client(settings: ProviderSettings) -> httpx2.AsyncClient:
    """The httpx2 client the Anthropic and Gemini SDKs are given (they do not accept httpx)."""
    return httpx2.AsyncClient(
        limits=httpx2.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        ),
        timeout=httpx2.Timeout(
            settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.timeout_s)
        ),
    )


def http_client(settings: ProviderSettings) -> httpx2.AsyncClient:
    """The client of the adapters that speak HTTP themselves (``openai``)."""
    return sdk_http_client(settings)
