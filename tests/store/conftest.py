"""Fixtures for the durable store: a fresh store per test on each backend, real servers only.

PostgreSQL tests share one database created for the test run
(``concierge_test_<random>``, dropped at the end); each test gets its own schema
in it through the DSN's ``search_path``. Everything runs inside one
``trio_asyncio.open_loop()`` per test, like the daemon.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
import trio_asyncio

from concierge.settings import StoreSettings
from concierge.store import Store, migrate, open_store
from concierge.store.postgres import execute_admin
from tests.pgserver import PrivatePostgres, available
from tests.stores import store_settings

ADMIN_DSN = os.environ.get("CONCIERGE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


def _admin_sync(dsn: str, *statements: str) -> None:
    """Run statements from plain asyncio in a worker thread (session fixtures run outside trio)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The DSN of a database made for this test run."""
    name = f"concierge_test_{secrets.token_hex(4)}"
    try:
        _admin_sync(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.fail(f"PostgreSQL at {ADMIN_DSN} is not reachable: {exc}")
    yield with_database(ADMIN_DSN, name)
    _admin_sync(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def aio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


async def fresh_schema(dsn: str) -> str:
    """A DSN whose search_path is a new, empty schema in ``dsn``'s database."""
    schema = f"t_{secrets.token_hex(5)}"
    await execute_admin(dsn, f"CREATE SCHEMA {schema}")
    return f"{dsn}?search_path={schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend_dsn(request: pytest.FixtureRequest) -> str | None:
    """``None`` for SQLite, the run's database DSN for PostgreSQL."""
    if request.param == "sqlite":
        return None
    dsn: str = request.getfixturevalue("pg_database")
    return dsn


@pytest.fixture
async def settings(
    backend_dsn: str | None, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> StoreSettings:
    """Settings of a fresh, migrated store of each backend."""
    if backend_dsn is None:
        made = store_settings(data_dir=tmp_path)
    else:
        made = store_settings(data_dir=tmp_path, database_url=await fresh_schema(backend_dsn))
    await migrate(made)
    return made


@pytest.fixture
async def store(settings: StoreSettings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A private cluster that tests may stop and start (started here)."""
    if not available():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
