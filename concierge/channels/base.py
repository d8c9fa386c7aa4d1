"""What a channel's sender does with one outbox row, and what it reports back.

The outbox actor owns retries, pacing and bookkeeping; a ``ChannelSender`` only
speaks one platform's wire format and classifies the result.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from concierge.protocol import Channel, OutboxRow


class SendStatus(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient: 5xx, 429, network; retry after ``retry_after_s`` (or backoff)
    UNREACHABLE = "unreachable"  # the user blocked us / is gone: mark and never retry
    REJECTED = "rejected"  # the platform refuses this message for good: give up the row


@attrs.frozen(kw_only=True)
class SendResult:
    status: SendStatus
    detail: str = ""
    retry_after_s: float | None = None
    message_ids: tuple[str, ...] = ()
    """The platform's ids of the messages a ``SENT`` row became (one per part), when it says."""


class ChannelSender(Protocol):
    @property
    def channel(self) -> Channel: ...

    async def send(self, row: OutboxRow) -> SendResult:
        """Deliver the row's text (splitting it as the platform needs); never raise for platform errors."""
        ...
