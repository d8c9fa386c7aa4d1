"""Hand-offs between actors that must never wait: a full or closed channel just misses it.

A nudge tells a channel's outbox sender that rows are waiting; a sender that misses
one still finds the rows at its next poll, so nobody blocks a turn to deliver it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import trio

from concierge.protocol import Channel, OutboxMsg, OutboxNudge

T = TypeVar("T")


def offer(channel: trio.MemorySendChannel[T] | None, message: T) -> bool:
    """Hand ``message`` over without waiting; ``False`` when there was no room or no reader."""
    if channel is None:
        return False
    try:
        channel.send_nowait(message)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def nudge_outbox(
    nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]] | None,
    channel: Channel,
    correlation_id: str,
) -> None:
    """Tell ``channel``'s sender that rows wait (no-op for a channel without a sender)."""
    sender = (nudges or {}).get(channel)
    offer(sender, OutboxNudge(channel=channel, correlation_id=correlation_id))
