"""LLM providers: one adapter per kind of API, and the parts the pool is made of.

Adapters (``anthropic``, ``gemini``, ``openai_compat``, ``offline``) turn a
``ProviderCall`` into a ``ProviderReply`` or a classified ``ProviderError``; keys,
breakers and credit monitors hold the health the pool decides on.
"""

from __future__ import annotations

from .adapter import Adapter as Adapter
from .breaker import (
    BreakerState as BreakerState,
    CircuitBreaker as CircuitBreaker,
    Ticket as Ticket,
)
from .credits import (
    CreditFetch as CreditFetch,
    CreditMonitor as CreditMonitor,
)
from .errors import ProviderError as ProviderError
from .factory import build_adapter as build_adapter
from .keys import (
    KeyRing as KeyRing,
    KeySlot as KeySlot,
)
from .offline import OfflineAdapter as OfflineAdapter
from .pool_stats import (
    KeyStatistics as KeyStatistics,
    PoolStatistics as PoolStatistics,
    ProviderCounters as ProviderCounters,
    ProviderStatistics as ProviderStatistics,
    pool_health_checks as pool_health_checks,
    pool_metrics as pool_metrics,
)
