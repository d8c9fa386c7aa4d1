"""Show WhatsApp's "seen" and "typing..." while a conversation works on a WAHA user's message.

Reads the WAHA presence channel (``TurnStarted`` / ``TurnEnded``): marks the chat read
and starts typing when a turn starts, repeats ``startTyping`` while it lasts (capped),
and stops typing when it ends. Best effort: a failed call is logged at debug and skipped.
"""

from __future__ import annotations

import structlog
import trio

from concierge.channels.waha_client import WahaClient
from concierge.protocol import Channel, PresenceMsg, TurnEnded, TurnStarted

__all__ = ["run_waha_presence"]

log = structlog.get_logger(__name__)


async def run_waha_presence(
    *,
    client: WahaClient,
    presence: trio.MemoryReceiveChannel[PresenceMsg],
    interval_s: float = 10.0,
    cap_s: float = 120.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep "typing..." in a chat from ``TurnStarted`` until ``TurnEnded`` (or ``cap_s``)."""
    active: dict[str, tuple[str, trio.CancelScope]] = {}

    async def keep_typing(chat_id: str, correlation_id: str, scope: trio.CancelScope) -> None:
        with scope:
            scope.deadline = trio.current_time() + cap_s
            seen = await client.send_seen(chat_id, correlation_id=correlation_id)
            if not seen.ok:
                log.debug("waha.presence_failed", step="sendSeen", correlation_id=correlation_id,
                          status=seen.status_code)
            while True:
                typing = await client.start_typing(chat_id, correlation_id=correlation_id)
                if not typing.ok:
                    log.debug("waha.presence_failed", step="startTyping", correlation_id=correlation_id,
                              status=typing.status_code)
                await trio.sleep(interval_s)
        current = active.get(chat_id)
        if current is not None and current[1] is scope:
            del active[chat_id]
            await stop_typing(chat_id, correlation_id)  # the cap ran out before TurnEnded

    async def stop_typing(chat_id: str, correlation_id: str) -> None:
        stopped = await client.stop_typing(chat_id, correlation_id=correlation_id)
        if not stopped.ok:
            log.debug("waha.presence_failed", step="stopTyping", correlation_id=correlation_id,
                      status=stopped.status_code)

    async with trio.open_nursery() as nursery:
        task_status.started()
        with presence:
            async for msg in presence:
                match msg:
                    case TurnStarted(channel=Channel.WAHA, chat_id=chat_id, correlation_id=cid):
                        previous = active.pop(chat_id, None)
                        if previous is not None:
                            previous[1].cancel()
                        scope = trio.CancelScope()
                        active[chat_id] = (cid, scope)
                        nursery.start_soon(keep_typing, chat_id, cid, scope)
                    case TurnEnded(channel=Channel.WAHA, chat_id=chat_id, correlation_id=cid):
                        entry = active.get(chat_id)
                        if entry is not None and entry[0] == cid:
                            del active[chat_id]
                            entry[1].cancel()
                            nursery.start_soon(stop_typing, chat_id, cid)
                    case _:
                        pass
        nursery.cancel_scope.cancel()
