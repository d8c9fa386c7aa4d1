"""Open the configured durable store (SQLite unless ``DATABASE_URL`` is set), or migrate it.

``open_store`` is an async context manager because the store owns a task: the
group-commit flusher that batches concurrent inbox writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from concierge.settings import StoreSettings
from concierge.store.postgres import PostgresStore, migrate_postgres, open_postgres
from concierge.store.roles import SharedStore, Store
from concierge.store.sqlite import FILE_NAME, migrate_sqlite, open_sqlite


def sqlite_path(settings: StoreSettings) -> Path:
    """Where the embedded store lives: ``<CONCIERGE_DATA_DIR>/concierge.sqlite3``."""
    return settings.data_dir / FILE_NAME


@asynccontextmanager
async def open_store(settings: StoreSettings, *, max_batch: int = 256) -> AsyncIterator[Store]:
    """The durable store for ``settings``, ready to use; closed (flushers stopped) on exit.

    SQLite migrates itself; PostgreSQL raises ``SchemaOutdated`` until ``concierge
    migrate`` has run, and ``StoreUnavailable`` when the server cannot be reached.
    PostgreSQL runs inside the caller's ``trio_asyncio.open_loop()`` (or its own).
    """
    if settings.database_url is None:
        async with open_sqlite(sqlite_path(settings), max_batch=max_batch) as sqlite_store:
            yield sqlite_store
    else:
        async with open_postgres(settings, max_batch=max_batch) as postgres_store:
            yield postgres_store


async def migrate(settings: StoreSettings) -> list[int]:
    """Bring the configured store's schema up to date; return the versions applied now."""
    if settings.database_url is None:
        return await migrate_sqlite(sqlite_path(settings))
    return await migrate_postgres(settings)


def shared(store: Store) -> SharedStore | None:
    """The store as several replicas share it (PostgreSQL), or ``None`` (SQLite: one process)."""
    return store if isinstance(store, PostgresStore) else None
