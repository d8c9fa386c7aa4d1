"""A durable store made for one benchmark run: SQLite in a temporary directory, or a fresh
PostgreSQL database on a server the benchmark may create and drop databases on."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from concierge.settings import StoreSettings
from concierge.store import Store, migrate, open_store
from concierge.store.postgres import execute_admin


def bench_store_settings(
    data_dir: Path,
    *,
    database_url: str | None = None,
    pool_size: int = 5,
    timeout_s: float = 30.0,
) -> StoreSettings:
    """Settings for a benchmark's store (SQLite under ``data_dir`` unless a DSN is given)."""
    return StoreSettings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=None,
        pool_size=pool_size,
        command_timeout_s=timeout_s,
        statement_timeout_s=timeout_s,
        redis_timeout_s=0.5,
        session_ttl_s=3600.0,
        retention_days=90,
    )


@asynccontextmanager
async def scratch_store(kind: str, settings: StoreSettings, admin_dsn: str) -> AsyncIterator[Store]:
    """``kind`` is ``sqlite`` or ``postgres``; a PostgreSQL database is dropped at the end."""
    if kind == "sqlite":
        async with open_store(settings) as store:
            yield store
        return
    name = f"concierge_bench_{secrets.token_hex(4)}"
    base, _, _ = admin_dsn.rpartition("/")
    await execute_admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        made = attrs.evolve(settings, database_url=f"{base}/{name}")
        await migrate(made)
        async with open_store(made) as store:
            yield store
    finally:
        with trio.CancelScope(shield=True):
            try:
                await execute_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:
                print(f"could not drop the bench database {name}: {exc!r}", file=sys.stderr)
