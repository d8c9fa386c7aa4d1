"""Inbox accepts per second on SQLite and PostgreSQL, with and without group commit.

Prints figures, asserts nothing. PostgreSQL runs through trio-asyncio as in the
daemon; a plain-asyncio asyncpg run of the same single-row INSERT (in a
subprocess, on the same server) gives the bridge-free reference.

    python bench/bench_store.py                    # both backends
    python bench/bench_store.py --skip-sqlite --n 5000
    CONCIERGE_BENCH_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres python bench/bench_store.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import trio
import trio_asyncio
from scratch_store import bench_store_settings  # this folder: run as a script

from concierge.protocol import Accepted, Channel, InboundMessage, utcnow
from concierge.settings import StoreSettings
from concierge.store import migrate
from concierge.store.postgres import PostgresStore, execute_admin, open_postgres
from concierge.store.sqlite import SqliteStore, open_sqlite

ADMIN_DSN = os.environ.get(
    "CONCIERGE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

Accept = Callable[[InboundMessage], Awaitable[Accepted]]


def without_group_commit(store: SqliteStore | PostgresStore) -> Accept:
    """``accept`` as the group committer's flush of a batch of one: a commit per call."""

    async def accept(message: InboundMessage) -> Accepted:
        return (await store._accept_batch([message]))[0]

    return accept


def message(prefix: str, n: int) -> InboundMessage:
    return InboundMessage(
        correlation_id=f"{prefix}{n:x}",
        channel=Channel.TELEGRAM,
        user_key=f"telegram:{n % 200}",
        chat_id=str(n % 200),
        external_id=f"{prefix}-{n}",
        text="Bonjour, à quelle heure est la messe ?",
        received_at=utcnow(),
    )


async def run_accepts(accept: Accept, *, prefix: str, n: int, concurrency: int) -> float:
    """Accept ``n`` distinct messages over ``concurrency`` callers; return accepts per second."""
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            await accept(message(prefix, i))

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return n / (time.perf_counter() - started)


async def bench_store(
    store: SqliteStore | PostgresStore, backend: str, *, n: int, concurrency: int
) -> list[tuple[str, str, float, str]]:
    rows: list[tuple[str, str, float, str]] = []
    plan = [
        ("sequential", "no", without_group_commit(store), 1),
        ("sequential", "yes", store.accept, 1),
        (f"{concurrency} concurrent", "no", without_group_commit(store), concurrency),
        (f"{concurrency} concurrent", "yes", store.accept, concurrency),
    ]
    for label, grouped, accept, callers in plan:
        before = store.committer.statistics()
        prefix = secrets.token_hex(3)
        count = n if (backend == "postgres" or callers > 1) else max(n // 4, 200)
        rate = await run_accepts(accept, prefix=prefix, n=count, concurrency=callers)
        after = store.committer.statistics()
        batches = after.batches - before.batches
        note = f"avg batch {(after.items - before.items) / batches:.1f}" if batches else ""
        rows.append((backend, f"{label}, group commit {grouped}", rate, note))
        print(
            f"  {backend:8} {label:14} group commit {grouped:3} {rate:9,.0f} accepts/s {note}",
            flush=True,
        )
    return rows


def asyncio_baseline(dsn: str, n: int, concurrency: int, pool_size: int) -> dict[str, float]:
    """Plain asyncio + asyncpg, one INSERT per accept (the same statement shape), no bridge."""
    import asyncpg

    sql = (
        "INSERT INTO inbox (correlation_id, channel, user_key, chat_id, external_id, text, kind, "
        "received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (channel, external_id) DO NOTHING RETURNING inbox_id"
    )

    async def main() -> dict[str, float]:
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        results: dict[str, float] = {}
        for label, callers in (("sequential", 1), ("concurrent", concurrency)):
            prefix = secrets.token_hex(3)
            counter = iter(range(n))

            async def caller(prefix: str = prefix, counter: Iterator[int] = counter) -> None:
                for i in counter:
                    m = message(prefix, i)
                    await pool.fetchval(
                        sql,
                        m.correlation_id,
                        m.channel.value,
                        m.user_key,
                        m.chat_id,
                        m.external_id,
                        m.text,
                        m.kind.value,
                        m.received_at,
                    )

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(callers)))
            results[label] = n / (time.perf_counter() - started)
        await pool.close()
        return results

    return asyncio.run(main())


def settings_for(data_dir: Path, dsn: str | None, pool_size: int) -> StoreSettings:
    return bench_store_settings(data_dir, database_url=dsn, pool_size=pool_size, timeout_s=10)


async def main(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"n={args.n} per scenario, concurrency={args.concurrency}, pool_size={args.pool_size}\n")
    table: list[tuple[str, str, float, str]] = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
            async with open_sqlite(Path(tmp) / "concierge.sqlite3") as sqlite_store:
                table += await bench_store(
                    sqlite_store, "sqlite", n=args.n, concurrency=args.concurrency
                )
    baseline: dict[str, float] = {}
    if not args.skip_postgres:
        database = f"concierge_bench_{secrets.token_hex(4)}"
        base = ADMIN_DSN.rpartition("/")[0]
        dsn = f"{base}/{database}"
        async with trio_asyncio.open_loop():
            await execute_admin(ADMIN_DSN, f'CREATE DATABASE "{database}"')
            try:
                settings = settings_for(Path(tempfile.gettempdir()), dsn, args.pool_size)
                await migrate(settings)
                async with open_postgres(settings) as pg_store:
                    table += await bench_store(
                        pg_store, "postgres", n=args.n, concurrency=args.concurrency
                    )
                command = [
                    sys.executable,
                    __file__,
                    "--asyncio-baseline",
                    dsn,
                    str(args.n),
                    str(args.concurrency),
                    str(args.pool_size),
                ]
                done = await trio.run_process(command, capture_stdout=True, check=True)
                baseline = json.loads(done.stdout.decode().strip().splitlines()[-1])
            finally:
                await execute_admin(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for label, rate in baseline.items():
            callers = "sequential" if label == "sequential" else f"{args.concurrency} concurrent"
            table.append(("asyncpg/asyncio", f"{callers}, single-row INSERT", rate, "no bridge"))
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(f"{'backend':16} {'scenario':44} {'accepts/s':>10}  note")
    print("-" * 90)
    for backend, scenario, rate, note in table:
        print(f"{backend:16} {scenario:44} {rate:10,.0f}  {note}")
    pg = {scenario: rate for backend, scenario, rate, _ in table if backend == "postgres"}
    if baseline and pg:
        grouped = pg.get(f"{args.concurrency} concurrent, group commit yes", 0.0)
        single = pg.get(f"{args.concurrency} concurrent, group commit no", 0.0)
        seq = pg.get("sequential, group commit no", 0.0)
        print("\nratios to plain-asyncio asyncpg single-row INSERTs on the same server:")
        print(f"  trio-asyncio sequential, no group commit: {seq / baseline['sequential']:.2f}x")
        print(
            f"  trio-asyncio {args.concurrency} concurrent, no group commit: {single / baseline['concurrent']:.2f}x"
        )
        print(
            f"  trio-asyncio {args.concurrency} concurrent, group commit: {grouped / baseline['concurrent']:.2f}x"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000, help="accepts per scenario")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--pool-size", type=int, default=5, help="PostgreSQL pool (CONCIERGE_DB_POOL_SIZE)"
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--asyncio-baseline":
        _, _, dsn, n, concurrency, pool_size = sys.argv
        print(json.dumps(asyncio_baseline(dsn, int(n), int(concurrency), int(pool_size))))
    else:
        trio.run(main, parse())
