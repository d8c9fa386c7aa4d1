"""Show "typing..." in a chat while the model works on its turn, for any channel.

Conversations write each chat's state on a ``PresenceBoard`` (a turn started, a turn
ended): a dict, not a queue, so a burst can never drop an "ended" and leave a chat
typing until the cap. ``run_presence`` reads what changed and keeps one task per
chat between the two, signalling at most once every ``interval_s`` per chat (a new
turn in the same chat does not signal sooner), capped at ``cap_s``. What "typing"
means on the wire is the channel's business: ``start`` once when a turn starts,
``repeat`` while it lasts, ``stop`` (optional) once it ended or the cap ran out.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping

import trio

from concierge.protocol import PresenceMsg, TurnEnded, TurnStarted

Signal = Callable[[str, str], Awaitable[bool]]
"""``signal(chat_id, correlation_id)``: show typing once; ``False`` gives up for this turn."""
Stop = Callable[[str, str], Awaitable[None]]

CALL_TIMEOUT_S = 15.0
"""The longest one presence call may take: a call is never cut off half way by a turn's end."""


class PresenceBoard:
    """Which chats of one channel have a turn running; never blocks, never drops.

    Written by conversations (``post``), read by one presence actor (``changes``).
    It holds one entry per chat with a turn under way, so its size is bounded by
    the turns in flight.
    """

    def __init__(self) -> None:
        self._wanted: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._changed = trio.Event()
        self.started = 0
        self.ended = 0

    @property
    def wanted(self) -> Mapping[str, str]:
        """Chat id → correlation id of the turn running there."""
        return self._wanted

    def post(self, msg: PresenceMsg) -> None:
        match msg:
            case TurnStarted(chat_id=chat_id, correlation_id=cid):
                self._wanted[chat_id] = cid
                self.started += 1
            case TurnEnded(chat_id=chat_id, correlation_id=cid):
                if self._wanted.get(chat_id) != cid:
                    return  # an older turn's end: the newer turn still types
                del self._wanted[chat_id]
                self.ended += 1
        self._dirty.add(msg.chat_id)
        self._changed.set()

    def resync(self) -> None:
        """Mark every chat changed: a new reader starts from the whole state."""
        self._dirty.update(self._wanted)
        self._changed.set()

    async def changes(self) -> dict[str, str | None]:
        """Wait for changes; each changed chat's running turn, or ``None`` when it has none."""
        while not self._dirty:
            self._changed = trio.Event()
            await self._changed.wait()
        dirty, self._dirty = self._dirty, set()
        return {chat_id: self._wanted.get(chat_id) for chat_id in dirty}


async def run_presence(
    *,
    board: PresenceBoard,
    start: Signal,
    repeat: Signal,
    stop: Stop | None = None,
    interval_s: float = 5.0,
    cap_s: float = 120.0,
    concurrency: int = 16,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Follow ``board`` until cancelled; at most ``concurrency`` presence calls at once.

    The calls share their connections with the replies, so they are few and bounded.
    """
    active: dict[str, tuple[str, trio.CancelScope]] = {}
    last_signal: dict[str, float] = {}
    limiter = trio.CapacityLimiter(concurrency)

    async def call(signal: Signal | Stop, chat_id: str, cid: str) -> bool | None:
        async with limiter:
            # Shielded: a turn's end never cuts a request half way (which would cost the
            # connection); it stops the loop at its next wait instead.
            with trio.move_on_after(CALL_TIMEOUT_S) as scope:
                scope.shield = True
                return await signal(chat_id, cid)
        return False

    async def keep_typing(chat_id: str, cid: str, scope: trio.CancelScope) -> None:
        with scope:
            scope.deadline = trio.current_time() + cap_s
            signal = start
            while True:
                await trio.sleep_until(last_signal.get(chat_id, -math.inf) + interval_s)
                last_signal[chat_id] = trio.current_time()
                if not await call(signal, chat_id, cid):
                    await trio.sleep_forever()  # gave up: wait for the end or the cap
                signal = repeat
        current = active.get(chat_id)
        if current is not None and current[1] is scope:
            del active[chat_id]  # the cap ran out before the turn ended
            if stop is not None:
                await call(stop, chat_id, cid)

    def forget_old_signals() -> None:
        if len(last_signal) > 10_000:
            horizon = trio.current_time() - interval_s
            for chat_id in [c for c, t in last_signal.items() if t < horizon]:
                del last_signal[chat_id]

    board.resync()
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            for chat_id, cid in (await board.changes()).items():
                current = active.get(chat_id)
                if current is not None and current[0] == cid:
                    continue
                if current is not None:
                    del active[chat_id]
                    current[1].cancel()
                    if cid is None and stop is not None:
                        nursery.start_soon(call, stop, chat_id, current[0])
                if cid is not None:
                    scope = trio.CancelScope()
                    active[chat_id] = (cid, scope)
                    nursery.start_soon(keep_typing, chat_id, cid, scope)
            forget_old_signals()
