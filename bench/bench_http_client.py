"""HTTP client cost under many concurrent requests: httpx (httpcore) against httpx2 (httpcore2).

httpcore's pool matches waiting requests to connections by walking both lists on
every change (quadratic in requests x connections); the httpx2 fork keeps queues
instead. A loopback server in its own process (Hypercorn's trio worker, a bare ASGI
app answering a small JSON body after ``--delay-ms``, as a Bot API or an LLM would) is
called by ``--tasks`` concurrent tasks through one pooled client of
``--connections`` connections, each client in turn, rounds interleaved. Prints
requests/s and the client process's CPU per request (the server's is not counted).
Asserts nothing.

Measured on the project's 2-core machine (medians of two rounds, 4,000 requests each):

    tasks, connections   client               requests/s   client CPU ms/request
    1,000, 64            httpx (httpcore)            180                   5.12
    1,000, 64            httpx2 (httpcore2)          631                   0.54
    64, 64               httpx (httpcore)            190                   4.82
    64, 64               httpx2 (httpcore2)          907                   0.38

So the channel clients and the OpenAI-compatible adapter use httpx2, as the Anthropic
and Gemini SDKs already do.

    python bench/bench_http_client.py
    python bench/bench_http_client.py --tasks 2000 --connections 256 --requests 20000
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import trio

BODY = b'{"ok":true,"result":{"message_id":1,"chat":{"id":7},"date":0,"text":"ok"}}'


def _serve(port: int, delay_s: float) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        if delay_s:
            await trio.sleep(delay_s)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 300
    config.backlog = 4096
    trio.run(serve, app, config)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Client = Callable[[int], Any]
CLIENTS: dict[str, Client] = {
    "httpx (httpcore)": lambda n: httpx.AsyncClient(
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        timeout=httpx.Timeout(60.0),
    ),
    "httpx2 (httpcore2)": lambda n: httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n),
        timeout=httpx2.Timeout(60.0),
    ),
}


async def _round(make: Client, url: str, args: argparse.Namespace) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) for one client."""
    per_task = max(1, args.requests // args.tasks)
    async with make(args.connections) as client:
        await client.post(url, json={"warm": True})

        async def task() -> None:
            for _ in range(per_task):
                response = await client.post(url, json={"chat_id": 7, "text": "Bonjour"})
                response.raise_for_status()

        cpu, wall = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(args.tasks):
                nursery.start_soon(task)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_task * args.tasks
    return done / wall, cpu * 1000 / done


async def main(args: argparse.Namespace) -> None:
    port = _free_port()
    spawn = multiprocessing.get_context("spawn")  # not a fork of a running trio loop
    server = spawn.Process(target=_serve, args=(port, args.delay_ms / 1000), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}/bot/sendMessage"
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            try:
                await probe.get(url)
                break
            except httpx.TransportError:
                await trio.sleep(0.1)
        else:
            raise SystemExit("the loopback server did not start")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    for _ in range(args.rounds):
        for name, make in CLIENTS.items():
            results[name].append(await _round(make, url, args))
    server.kill()
    print(
        f"{args.tasks} concurrent tasks, {args.connections} connections, "
        f"{args.requests} requests per round, server delay {args.delay_ms} ms, "
        f"{args.rounds} rounds (medians)"
    )
    print(f"{'client':<22} {'requests/s':>11} {'client CPU ms/request':>22}")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<22} {rate:>11,.0f} {cpu:>22.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    trio.run(main, parser.parse_args())
