"""Show "typing..." in a chat for as long as a turn runs, for any channel.

Conversations announce ``TurnStarted``/``TurnEnded``; this actor keeps one
keep-alive task per chat between the two (a new turn in the same chat replaces
the old one), capped at ``cap_s`` so a lost ``TurnEnded`` cannot type forever.
What "typing" means on the wire is the channel's business: ``keep`` runs while
the turn lasts; ``stop`` (optional) runs once it ended or the cap ran out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from concierge.protocol import Channel, PresenceMsg, TurnEnded, TurnStarted

Keep = Callable[[str, str], Awaitable[None]]
"""``keep(chat_id, correlation_id)``: signal typing until cancelled."""
Stop = Callable[[str, str], Awaitable[None]]


async def run_presence(
    *,
    channel: Channel,
    presence: trio.MemoryReceiveChannel[PresenceMsg],
    keep: Keep,
    stop: Stop | None = None,
    cap_s: float = 120.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    active: dict[str, tuple[str, trio.CancelScope]] = {}

    async def keep_typing(chat_id: str, correlation_id: str, scope: trio.CancelScope) -> None:
        with scope:
            scope.deadline = trio.current_time() + cap_s
            await keep(chat_id, correlation_id)
        current = active.get(chat_id)
        if current is not None and current[1] is scope:
            del active[chat_id]  # the cap ran out (or keep gave up) before TurnEnded
            if stop is not None:
                await stop(chat_id, correlation_id)

    async with trio.open_nursery() as nursery:
        task_status.started()
        with presence:
            async for msg in presence:
                match msg:
                    case TurnStarted(chat_id=chat_id, correlation_id=cid) if msg.channel is channel:
                        previous = active.pop(chat_id, None)
                        if previous is not None:
                            previous[1].cancel()
                        scope = trio.CancelScope()
                        active[chat_id] = (cid, scope)
                        nursery.start_soon(keep_typing, chat_id, cid, scope)
                    case TurnEnded(chat_id=chat_id, correlation_id=cid) if msg.channel is channel:
                        entry = active.get(chat_id)
                        if entry is not None and entry[0] == cid:
                            del active[chat_id]
                            entry[1].cancel()
                            if stop is not None:
                                nursery.start_soon(stop, chat_id, cid)
                    case _:
                        pass
        nursery.cancel_scope.cancel()
