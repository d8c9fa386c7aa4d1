"""Webhook delivery the way the Bot API server does it, over raw keep-alive connections.

At most ``connections`` requests are in flight, each on its own HTTP/1.1 connection
(``setWebhook``'s ``max_connections``, 40 by default); a user's updates go one at a
time and in order (the next only after the previous one got a 2xx); a non-2xx answer
or a broken connection is retried after ``retry_s``. The time from writing a request
to reading its answer is recorded as the ack latency: the client adds no pool of its
own, so the figure is the server's.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import h11
import trio

__all__ = ["Delivery", "deliver"]


@attrs.define
class Delivery:
    """What delivering a batch of updates saw."""

    acks_s: list[float] = attrs.field(factory=list)
    """One per 2xx answer, in seconds."""
    retries: int = 0
    statuses: dict[int, int] = attrs.field(factory=dict)
    """Non-2xx answers by status (0: connection error)."""
    first_sent_at: float | None = None
    last_acked_at: float | None = None


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._stream: trio.SocketStream | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._h11 = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="POST",
            target=path,
            headers=[
                ("host", f"{self._host}:{self._port}"),
                ("content-length", str(len(body))),
                *headers.items(),
            ],
        )
        pieces = (request, h11.Data(data=body), h11.EndOfMessage())
        await self._stream.send_all(b"".join(self._h11.send(p) or b"" for p in pieces))
        status = 0
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._stream.receive_some(65536)
                self._h11.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("closed before the answer ended")
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
            await self.close()
        else:
            self._h11.start_next_cycle()
        return status

    async def close(self) -> None:
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None


async def deliver(
    updates: Sequence[Mapping[str, Any]],
    *,
    host: str,
    port: int,
    path: str,
    secret: str,
    connections: int = 40,
    retry_s: float = 1.0,
    result: Delivery | None = None,
) -> Delivery:
    """POST every update, a chat's updates in order; what was seen goes into ``result``.

    ``result`` (a new one by default) fills in as updates are delivered, so a caller that
    gives up early still has the figures so far.
    """
    queues: dict[int, deque[bytes]] = {}
    for update in updates:
        chat = int(update["message"]["chat"]["id"])
        queues.setdefault(chat, deque()).append(json.dumps(update).encode())
    result = result if result is not None else Delivery()
    if not queues:
        return result
    headers = {
        "content-type": "application/json",
        "x-telegram-bot-api-secret-token": secret,
    }
    # Each chat is in the channel at most once: its size never blocks a send.
    ready_send, ready_receive = trio.open_memory_channel[int](len(queues) + 1)
    for chat in queues:
        ready_send.send_nowait(chat)
    pending_chats = len(queues)

    async def worker() -> None:
        nonlocal pending_chats
        connection = _Connection(host, port)
        try:
            async for chat in ready_receive:
                queue = queues[chat]
                body = queue[0]
                while True:
                    started = trio.current_time()
                    if result.first_sent_at is None:
                        result.first_sent_at = started
                    try:
                        status = await connection.post(path, body, headers)
                    except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                        await connection.close()
                        status = 0
                    if 200 <= status < 300:
                        done = trio.current_time()
                        result.acks_s.append(done - started)
                        result.last_acked_at = done
                        break
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    result.retries += 1
                    await trio.sleep(retry_s)
                queue.popleft()
                if queue:
                    ready_send.send_nowait(chat)
                else:
                    pending_chats -= 1
                    if pending_chats == 0:
                        ready_send.close()
        finally:
            await connection.close()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return result
