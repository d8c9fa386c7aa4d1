"""The console channel: replies go into a bounded memory channel that ``concierge chat`` reads."""

from __future__ import annotations

import trio

from concierge.channels.base import SendResult, SendStatus
from concierge.protocol import Channel, OutboxRow


class ConsoleSender:
    """A ``ChannelSender`` for ``Channel.CONSOLE``: delivers each outbox row to ``deliveries``.

    A full channel (the reader is slow) is a retry; a closed one (the chat ended)
    gives the row up, since nobody will ever read it.
    """

    def __init__(
        self, deliveries: trio.MemorySendChannel[OutboxRow], *, timeout_s: float = 1.0
    ) -> None:
        self._deliveries = deliveries
        self._timeout_s = timeout_s

    @property
    def channel(self) -> Channel:
        return Channel.CONSOLE

    async def send(self, row: OutboxRow) -> SendResult:
        with trio.move_on_after(self._timeout_s):
            try:
                await self._deliveries.send(row)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return SendResult(status=SendStatus.REJECTED, detail="the console reader has gone")
            return SendResult(status=SendStatus.SENT)
        return SendResult(
            status=SendStatus.RETRY,
            detail="the console reader is not keeping up",
            retry_after_s=0.5,
        )


def open_console(capacity: int = 16) -> tuple[ConsoleSender, trio.MemoryReceiveChannel[OutboxRow]]:
    """A sender and the receiving end the chat loop reads replies from."""
    send, receive = trio.open_memory_channel[OutboxRow](capacity)
    return ConsoleSender(send), receive
