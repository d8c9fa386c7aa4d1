"""Telegram webhook ingest: signed POST → 200 with a committed inbox row, against a bare 200 app.

Two servers, each in its own process on Hypercorn's trio worker, are driven in turn by
the same small raw-socket load generator (``--connections`` concurrent keep-alive
connections, ``--seconds`` per run, rounds interleaved so both see the same machine):

* ``bare``: an ASGI app that answers 200 with no body;
* ``ingest``: the daemon's HTTP app (``concierge.app.http.create_app``) with the Telegram
  webhook answered by ``with_telegram_webhook`` in bare ASGI in front of it, as
  ``concierge run`` serves it: an ``Ingest`` over the durable store (PostgreSQL through
  trio-asyncio when available, else SQLite) and a router drained at once.

Every request carries a distinct update, so every 200 is a new inbox row; the rows are
counted afterwards. Prints requests/s, p50/p99/max ack latency and the ingest/bare
ratio. Asserts nothing.

    python bench/bench_webhook.py                      # PostgreSQL, falling back to SQLite
    python bench/bench_webhook.py --store sqlite --seconds 5
    CONCIERGE_BENCH_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres python bench/bench_webhook.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch_store import bench_store_settings  # this folder: run as a script

from concierge.app.http import create_app
from concierge.channels import with_telegram_webhook
from concierge.domain import Ingest
from concierge.observability import HealthBoard
from concierge.protocol import Inbound
from concierge.settings import HttpSettings, StoreSettings
from concierge.store import migrate, open_store
from concierge.store.postgres import execute_admin

ADMIN_DSN = os.environ.get(
    "CONCIERGE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench_" + "S" * 40
PATH = "/webhooks/telegram"


def store_settings(data_dir: Path, dsn: str | None, pool_size: int) -> StoreSettings:
    return bench_store_settings(data_dir, database_url=dsn, pool_size=pool_size, timeout_s=10)


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -- the servers (child processes) ------------------------------------------------------------
async def bare_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def serve_app(app: Any) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 1024
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config))
        print(binds[0], flush=True)


async def serve_ingest(dsn: str | None, data_dir: Path, pool_size: int) -> None:
    settings = store_settings(data_dir, dsn, pool_size)
    async with trio_asyncio.open_loop(), open_store(settings) as store:
        router_send, router_receive = trio.open_memory_channel[Inbound](10_000)

        async def drain() -> None:
            async for _ in router_receive:
                pass

        http = HttpSettings(
            host="127.0.0.1",
            port=0,
            max_body_bytes=1 << 20,
            read_timeout_s=10,
            graceful_timeout_s=1,
        )
        app = with_telegram_webhook(
            create_app(board=HealthBoard(version="bench"), settings=http),
            ingest=Ingest(store=store, router=router_send),
            secret=SECRET,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await serve_app(app)


def child_main(args: argparse.Namespace) -> None:
    quiet_logs()
    if args.serve == "bare":
        trio.run(serve_app, bare_app)
    else:
        trio.run(serve_ingest, args.dsn or None, Path(args.data_dir), args.pool_size)


# -- the load generator ------------------------------------------------------------------------
_update_ids = itertools.count(1_000_000)


def update_body(n: int) -> bytes:
    user = 100_000 + n % 1000
    return json.dumps(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": 1_700_000_000,
                "text": "À quelle heure est la messe ?",
                "from": {"id": user, "is_bot": False, "first_name": "Ana", "language_code": "fr"},
                "chat": {"id": user, "type": "private", "first_name": "Ana"},
            },
        }
    ).encode()


async def load(
    url: str, *, connections: int, seconds: float
) -> tuple[int, list[float], dict[int, int]]:
    """Keep ``connections`` HTTP/1.1 keep-alive connections busy for ``seconds``.

    Raw trio sockets with a minimal response parser: httpx topped out near 450 req/s
    on this machine, below the bare server, so it would have measured itself.
    """
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        stream = await trio.open_tcp_stream(host, port)
        buffer = b""
        async with stream:
            while trio.current_time() < deadline:
                body = update_body(next(_update_ids))
                request = (
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                started = time.perf_counter()
                await stream.send_all(request)
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise RuntimeError("the server closed the connection")
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                status = int(lines[0].split(b" ", 2)[1])
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise RuntimeError("the server closed the connection")
                    buffer += chunk
                buffer = buffer[length:]
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return len(latencies), latencies, statuses


async def with_server(command: list[str], run: Callable[[str], Awaitable[Any]]) -> Any:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=-1, check=False)
        )
        assert process.stdout is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise RuntimeError(f"server exited early: {command}")
                line += chunk
        try:
            return await run(line.decode().strip())
        finally:
            process.terminate()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def count_rows(dsn: str | None, data_dir: Path) -> int:
    if dsn is None:
        path = data_dir / "concierge.sqlite3"
        if not path.exists():
            return 0
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
        finally:
            conn.close()
    import asyncpg

    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
    try:
        return int(await trio_asyncio.aio_as_trio(conn.fetchval)("SELECT count(*) FROM inbox"))
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


Runs = list[tuple[float, list[float], dict[int, int]]]
"""Per round: requests per second, every latency, answers by status."""


async def measure(args: argparse.Namespace, dsn: str | None, data_dir: Path, backend: str) -> None:
    me = [sys.executable, __file__]
    ingest = [*me, "--serve", "ingest", "--data-dir", str(data_dir)]
    ingest += ["--pool-size", str(args.pool_size), *(["--dsn", dsn] if dsn else [])]
    servers = [("bare", [*me, "--serve", "bare"], "/"), ("ingest", ingest, PATH)]
    results: dict[str, Runs] = {name: [] for name, _, _ in servers}
    rows_written = 0
    acked = 0  # 200s of ingest runs, warm-up included
    for round_ in range(1, args.rounds + 1):
        for name, command, path in servers:

            async def run(
                base: str, path: str = path, name: str = name
            ) -> tuple[int, list[float], dict[int, int]]:
                nonlocal acked
                _, _, warm = await load(
                    base + path, connections=args.connections, seconds=args.warmup
                )
                measured = await load(
                    base + path, connections=args.connections, seconds=args.seconds
                )
                if name == "ingest":
                    acked += warm.get(200, 0) + measured[2].get(200, 0)
                return measured

            before = await count_rows(dsn, data_dir)
            n, latencies, statuses = await with_server(command, run)
            rows_written += (await count_rows(dsn, data_dir)) - before
            rate = n / args.seconds
            results[name].append((rate, latencies, statuses))
            print(
                f"round {round_} {name:9} {rate:8,.0f} req/s  p50 {pct(latencies, 0.50):6.1f} ms  "
                f"p99 {pct(latencies, 0.99):6.1f} ms  max {max(latencies) * 1000:6.1f} ms  {statuses}",
                flush=True,
            )
    report(args, backend, results)
    non_200 = sum(c for _, _, st in results["ingest"] for code, c in st.items() if code != 200)
    print(
        f"  ingest 200s (warm-up included): {acked:,}; inbox rows written: {rows_written:,}; "
        f"non-200 answers: {non_200}"
    )


def report(args: argparse.Namespace, backend: str, results: dict[str, Runs]) -> None:
    print(
        f"\n{backend}: {args.connections} connections, {args.seconds:g} s per run, {args.rounds} rounds "
        f"(median rate, pooled latencies)"
    )
    bare_rate = statistics.median(r for r, _, _ in results["bare"])
    for name, label in (("bare", "bare ASGI 200"), ("ingest", "ingest, the daemon's route")):
        rate = statistics.median(r for r, _, _ in results[name])
        latencies = [x for _, lat, _ in results[name] for x in lat]
        ratio = "" if name == "bare" else f"  ratio {rate / bare_rate:.2f}"
        print(
            f"  {label:27} {rate:8,.0f} req/s  p50 {pct(latencies, 0.5):6.1f} ms  "
            f"p99 {pct(latencies, 0.99):6.1f} ms{ratio}"
        )
    print("  targets: ratio >= 0.50, p99 <= 50 ms")


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    load_avg = os.getloadavg()
    print(
        f"load average before: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} on {os.cpu_count()} CPUs\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        data_dir = Path(tmp)
        if args.store in ("postgres", "auto"):
            database = f"concierge_bench_{secrets.token_hex(4)}"
            dsn = f"{ADMIN_DSN.rpartition('/')[0]}/{database}"
            async with trio_asyncio.open_loop():
                try:
                    await execute_admin(ADMIN_DSN, f'CREATE DATABASE "{database}"')
                except Exception as exc:
                    if args.store == "postgres":
                        raise
                    print(f"PostgreSQL unavailable ({exc}); measuring SQLite instead\n")
                else:
                    try:
                        await migrate(store_settings(data_dir, dsn, args.pool_size))
                        await measure(args, dsn, data_dir, "postgres")
                    finally:
                        await execute_admin(
                            ADMIN_DSN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
                        )
                    args.store = "done"
        if args.store in ("sqlite", "auto"):
            async with trio_asyncio.open_loop():
                await measure(args, None, data_dir, "sqlite")
    load_avg = os.getloadavg()
    print(f"\nload average after: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["auto", "postgres", "sqlite"], default="auto")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--serve", choices=["bare", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        child_main(arguments)
    else:
        trio.run(main, arguments)
