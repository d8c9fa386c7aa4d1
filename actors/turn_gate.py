"""The turn gate: the daemon's drain closes it, and from then on no turn starts in this process.

Conversation actors pass every turn through the gate. Once it is closed, an actor
finishes the turn it is in, then only takes messages off its queue without
handling them: those rows stay unprocessed in the durable inbox, where the next
start (or another replica) finds them, and the router never sees a full queue
(which would answer the user "one moment"). ``wait_idle`` tells the drain when the
last turn in flight has committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

M = TypeVar("M")


class TurnGate:
    """Counts the turns in flight; once closed, lets no new one start."""

    def __init__(self) -> None:
        self._closed = False
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def close(self) -> None:
        """No turn starts after this; the ones in flight go on."""
        self._closed = True

    async def turn(self, handle: Callable[[M], Awaitable[None]], msg: M) -> bool:
        """Run ``handle(msg)`` as a turn in flight; False (and nothing run) once closed."""
        if self._closed:
            return False
        if self._in_flight == 0:
            self._idle = trio.Event()
        self._in_flight += 1
        try:
            await handle(msg)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        return True

    async def wait_idle(self) -> None:
        """Return once no turn is in flight (callers bound the wait)."""
        while self._in_flight:
            await self._idle.wait()

    @staticmethod
    async def set_aside(receive: trio.MemoryReceiveChannel[M]) -> None:
        """Take messages off a closed actor's queue without handling them, until it ends.

        Each one is an inbox row that stays unprocessed: nothing is lost, and a full
        queue would make the router answer "one moment" instead.
        """
        async for _ in receive:
            pass
