"""PostgreSQL schema versioning: ``migrate`` applies what is missing, ``open_store`` checks it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio

from concierge.store import migrate, open_store
from concierge.store.errors import SchemaOutdated
from concierge.store.migrations import latest_version
from concierge.store.postgres import execute_admin
from tests.store.conftest import fresh_schema
from tests.stores import store_settings

ALL_VERSIONS = list(range(1, latest_version("postgres") + 1))

pytestmark = pytest.mark.anyio

ALL_VERSIONS = list(range(1, latest_version("postgres") + 1))


async def test_an_unmigrated_database_is_refused_with_a_hint_to_migrate(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> None:
    settings = store_settings(data_dir=tmp_path, database_url=await fresh_schema(pg_database))
    with pytest.raises(SchemaOutdated, match="run `concierge migrate`") as caught:
        async with open_store(settings):
            pass
    assert (caught.value.found, caught.value.needed) == (0, latest_version("postgres"))


async def test_an_older_schema_is_refused_until_migrated(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> None:
    dsn = await fresh_schema(pg_database)
    settings = store_settings(data_dir=tmp_path, database_url=dsn)
    assert await migrate(settings) == ALL_VERSIONS
    await execute_admin(
        dsn, f"DELETE FROM schema_migrations WHERE version = {latest_version('postgres')}"
    )
    with pytest.raises(SchemaOutdated):
        async with open_store(settings):
            pass


async def test_concurrent_migrations_apply_each_version_once(
    pg_database: str, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> None:
    settings = store_settings(data_dir=tmp_path, database_url=await fresh_schema(pg_database))
    results: list[list[int]] = []

    async def run() -> None:
        results.append(await migrate(settings))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(run)
    assert sorted(results) == [[], [], ALL_VERSIONS]
    async with open_store(settings) as store:
        await store.ping()
