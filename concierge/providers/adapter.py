"""What a provider adapter is: one kind of LLM API turned into a reply or an ``Outcome``.

Adapters are stateless about health: they classify, the pool decides. Each call
gets one API key and a timeout; an adapter never retries (SDKs run with
``max_retries=0``) because the pool owns the only retry loop.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from concierge.protocol import ServiceType, Turn
from concierge.settings import ApiKey


@attrs.frozen(kw_only=True)
class ProviderCall:
    """One attempt's input, cut from a ``CompletionRequest``."""

    correlation_id: str
    system: str
    turns: tuple[Turn, ...]
    max_tokens: int
    timeout_s: float
    query: str = ""
    language: str = "fr"
    service_type: ServiceType = ServiceType.RENSEIGNEMENT


@attrs.frozen(kw_only=True)
class ProviderReply:
    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0


class Adapter(Protocol):
    """One configured provider (``name``) of one ``kind``."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, call: ProviderCall, key: ApiKey) -> ProviderReply:
        """Answer ``call`` with ``key`` or raise ``ProviderError``; honour ``call.timeout_s``."""
        ...

    async def aclose(self) -> None: ...
