"""A scripted HTTP/1.1 server on loopback: the core every fake LLM API is built on.

Each fake (``FakeAnthropic``, ``FakeGemini``, ``FakeOpenAI``) subclasses ``ScriptedServer``
and only says how its wire format looks: which paths it serves, where the API key
travels, and how a successful reply is shaped. The core serves real HTTP with h11 on
``trio.serve_tcp`` (no framework: start-up is instant, a client that goes away cancels
its request at once, and shutdown cancels everything), and gives every fake the same
test controls::

    async with FakeAnthropic.serve() as fake:
        fake.push(Scripted(text="Bonjour"))                        # next reply
        fake.push(fake.error(529, "overloaded_error", "Overloaded"))
        fake.push(Scripted(hang=True))                             # never answers
        fake.by_key["sk-dead"] = fake.error(401, "authentication_error", "invalid x-api-key")
        fake.default = Scripted(text="default reply")              # when the script is empty
        ... call fake.url ...
        assert fake.requests[0].key == "sk-live"
        assert fake.requests[0].json["max_tokens"] == 100

    # hold every request until released (concurrency measurements):
    fake.hold()
    ... start 100 calls ...
    await fake.wait_in_flight(90)     # returns once 90 requests are held at the same time
    fake.release()
    await fake.wait_idle()            # every request answered (or abandoned by its client)
    assert fake.max_in_flight >= 90

A scripted entry is consumed by the first request to its endpoint (``push(...,
endpoint=...)``; the fake's main endpoint by default) whose key matches
``Scripted.key`` (``None`` matches any key). With no matching entry, ``by_key`` then
``default`` answer. Delays and hangs use ``trio.sleep``.

Use the real clock with these fakes: under ``MockClock(autojump_threshold=0)`` a task
waiting on a loopback socket looks idle, so the clock jumps and client timeouts fire
before the fake could answer. Clients need a connection pool of at least the
concurrency a test wants to see (httpx's default is 100 connections).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio

__all__ = ["Received", "Route", "Scripted", "ScriptedServer", "seconds_text"]


@attrs.frozen(kw_only=True)
class Scripted:
    """One scripted answer.

    ``body`` (JSON) is sent as is with ``status``; without a body a successful reply is
    built by the fake from ``text`` (and ``tokens_in``/``tokens_out``). ``delay_s`` waits
    before answering; ``hang`` never answers (the client must time out); ``raw`` sends
    these bytes instead of JSON (a broken upstream). ``extra`` is merged into a built
    success body (e.g. ``{"stop_reason": "refusal"}`` for Anthropic).
    """

    status: int = 200
    text: str = "Bonjour, que puis-je pour vous ?"
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    raw: bytes | None = None
    tokens_in: int = 11
    tokens_out: int = 7
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    key: str | None = None


@attrs.frozen(kw_only=True)
class Received:
    """One request as the fake saw it: headers lower-cased, body parsed as JSON if it was."""

    method: str
    path: str
    endpoint: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any
    key: str | None
    path_args: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Route:
    """Where a request goes: an endpoint name and what the path carried (e.g. the model)."""

    endpoint: str
    path_args: Mapping[str, str] = attrs.field(factory=dict)


class ScriptedServer:
    """Serves scripted JSON replies over real HTTP; subclasses define the wire format."""

    main_endpoint: ClassVar[str] = "main"

    def __init__(self) -> None:
        self.default = Scripted()
        self.by_key: dict[str, Scripted] = {}
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._scripts: dict[str, deque[Scripted]] = {}
        self._gate: trio.Event | None = None
        self._waiters: list[tuple[Callable[[int], bool], trio.Event]] = []
        self._port: int | None = None

    # -- what a subclass defines -----------------------------------------------------
    def route(self, method: str, path: str) -> Route | None:
        """The endpoint a request goes to, or ``None`` for 404."""
        raise NotImplementedError

    def key_of(self, headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
        """The API key the request carried, wherever this API expects it."""
        raise NotImplementedError

    def success_body(self, reply: Scripted, request: Received) -> Any:
        """The JSON of a successful reply to ``request`` built from ``reply``."""
        raise NotImplementedError

    def not_found_body(self, path: str) -> Any:
        return {"error": {"code": 404, "message": f"no route for {path}"}}

    def success_headers(self, request: Received) -> Mapping[str, str]:
        return {}

    def answer_other(self, request: Received) -> tuple[int, Any, Mapping[str, str]] | None:
        """An answer for a secondary endpoint when nothing is scripted for it."""
        return None

    # -- controls ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError("the fake is not serving; use `async with Fake.serve() as fake`")
        return f"http://127.0.0.1:{self._port}"

    def push(self, *replies: Scripted, endpoint: str | None = None) -> None:
        """Queue replies for the next requests to ``endpoint`` (the main one by default)."""
        self._scripts.setdefault(endpoint or self.main_endpoint, deque()).extend(replies)

    def pending(self, endpoint: str | None = None) -> int:
        """Scripted replies not yet consumed."""
        return len(self._scripts.get(endpoint or self.main_endpoint, ()))

    def hold(self) -> None:
        """From now on every request waits (counted in flight) until ``release()``."""
        if self._gate is None:
            self._gate = trio.Event()

    def release(self) -> None:
        """Let every held request through; later requests are not held."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def wait_in_flight(self, count: int) -> None:
        """Return once at least ``count`` requests are in flight at the same time."""
        await self._wait_until(lambda n: n >= count)

    async def wait_idle(self) -> None:
        """Return once no request is in flight (a client that gave up counts as gone)."""
        await self._wait_until(lambda n: n == 0)

    async def _wait_until(self, condition: Callable[[int], bool]) -> None:
        if condition(self.in_flight):
            return
        event = trio.Event()
        self._waiters.append((condition, event))
        await event.wait()

    def _count(self, delta: int) -> None:
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        still: list[tuple[Callable[[int], bool], trio.Event]] = []
        for condition, event in self._waiters:
            if condition(self.in_flight):
                event.set()
            else:
                still.append((condition, event))
        self._waiters = still

    def requests_to(self, endpoint: str | None = None) -> list[Received]:
        wanted = endpoint or self.main_endpoint
        return [r for r in self.requests if r.endpoint == wanted]

    @classmethod
    @asynccontextmanager
    async def serve(cls, *args: Any, **kwargs: Any) -> AsyncIterator[Self]:
        """Serve on a free loopback port for the duration of the block."""
        fake = cls(*args, **kwargs)
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(_serve_tcp, fake._connection)
            fake._port = listeners[0].socket.getsockname()[1]
            try:
                yield fake
            finally:
                fake.release()
                nursery.cancel_scope.cancel()
                fake._port = None

    # -- the HTTP side ------------------------------------------------------------------
    def _next_reply(self, endpoint: str, key: str | None) -> Scripted | None:
        script = self._scripts.get(endpoint)
        if script:
            for index, reply in enumerate(script):
                if reply.key is None or reply.key == key:
                    del script[index]
                    return reply
        if endpoint != self.main_endpoint:
            return None
        if key is not None and key in self.by_key:
            return self.by_key[key]
        return self.default

    async def _answer(self, request: Received) -> tuple[int, bytes, dict[str, str]]:
        """Decide and wait out the answer to one request (may be cancelled by a disconnect)."""
        if self._gate is not None:
            await self._gate.wait()
        reply = self._next_reply(request.endpoint, request.key)
        if reply is None:
            other = self.answer_other(request)
            if other is None:
                raise RuntimeError(f"nothing answers endpoint {request.endpoint!r}")
            status, body, headers = other
            return (
                status,
                json.dumps(body).encode(),
                {"content-type": "application/json", **headers},
            )
        if reply.hang:
            await trio.sleep_forever()
        if reply.delay_s > 0:
            await trio.sleep(reply.delay_s)
        headers = {"content-type": "application/json"}
        if reply.raw is not None:
            headers = {"content-type": "text/plain"}
            return reply.status, reply.raw, {**headers, **reply.headers}
        body = reply.body
        if body is None:
            body = self.success_body(reply, request)
            headers.update(self.success_headers(request))
        return reply.status, json.dumps(body).encode(), {**headers, **reply.headers}

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                head, body = await _read_request(conn, stream)
                if head is None:
                    return
                if not await self._exchange(conn, stream, head, body):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _exchange(
        self, conn: h11.Connection, stream: trio.SocketStream, head: h11.Request, body: bytes
    ) -> bool:
        """Answer one request; ``False`` when the client went away first."""
        target = head.target.decode("latin-1")
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        method = head.method.decode("ascii")
        route = self.route(method, parts.path)
        if route is None:
            await _send(
                conn,
                stream,
                404,
                json.dumps(self.not_found_body(parts.path)).encode(),
                {"content-type": "application/json"},
            )
            return True
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = Received(
            method=method,
            path=parts.path,
            endpoint=route.endpoint,
            params=params,
            headers=headers,
            body=body,
            json=parsed,
            key=self.key_of(headers, params),
            path_args=route.path_args,
        )
        self.requests.append(request)
        self._count(+1)
        try:
            gone = False
            async with trio.open_nursery() as nursery:
                answer_scope = trio.CancelScope()

                async def watch() -> None:
                    nonlocal gone
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            gone = True
                            answer_scope.cancel()
                            return
                        conn.receive_data(data)

                nursery.start_soon(watch)
                answer: tuple[int, bytes, dict[str, str]] | None = None
                with answer_scope:
                    answer = await self._answer(request)
                nursery.cancel_scope.cancel()
            if gone or answer is None:
                return False
        finally:
            self._count(-1)
        status, payload, out_headers = answer
        await _send(conn, stream, status, payload, out_headers)
        return True


async def _serve_tcp(
    handler: Callable[[trio.SocketStream], Any],
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await trio.serve_tcp(handler, 0, host="127.0.0.1", backlog=512, task_status=task_status)


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    head: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return head, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None, b""


async def _send(
    conn: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    payload: bytes,
    headers: Mapping[str, str],
) -> None:
    out = [(k, v) for k, v in headers.items() if k.lower() != "content-length"]
    out.append(("content-length", str(len(payload))))
    pieces = [
        conn.send(h11.Response(status_code=status, headers=out, reason=_reason(status))),
        conn.send(h11.Data(data=payload)) if payload else b"",
        conn.send(h11.EndOfMessage()),
    ]
    await stream.send_all(b"".join(p or b"" for p in pieces))


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, "Status").encode()


def seconds_text(seconds: float) -> str:
    """A protobuf duration as Google writes it (``7s``, ``36.4s``)."""
    if math.isclose(seconds, round(seconds)):
        return f"{round(seconds)}s"
    return f"{seconds:g}s"
