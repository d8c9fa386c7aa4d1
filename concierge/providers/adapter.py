"""What a provider adapter is: one kind of LLM API turned into a reply or an ``Outcome``.

Adapters are stateless about health: they classify, the pool decides. Each call
gets one API key and a timeout; an adapter never retries (SDKs run with
``max_retries=0``) because the pool owns the only retry loop.
"""

from __future__ import annotations

from typing import Protocol

from concierge.protocol import ProviderCall, ProviderReply
from concierge.settings import ApiKey


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
