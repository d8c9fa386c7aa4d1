"""Stores for tests: the settings they are opened with, and a SQLite store in a directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from concierge.settings import StoreSettings
from concierge.store import Store, open_store


def store_settings(
    *,
    data_dir: Path,
    database_url: str | None = None,
    redis_url: str | None = None,
    pool_size: int = 5,
    command_timeout_s: float = 5.0,
    statement_timeout_s: float = 5.0,
) -> StoreSettings:
    """SQLite under ``data_dir`` unless ``database_url`` is given; no Redis unless ``redis_url``."""
    return StoreSettings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        pool_size=pool_size,
        command_timeout_s=command_timeout_s,
        statement_timeout_s=statement_timeout_s,
        redis_timeout_s=0.5,
        session_ttl_s=3600.0,
        retention_days=90,
    )


@asynccontextmanager
async def sqlite_store(data_dir: Path) -> AsyncIterator[Store]:
    async with open_store(store_settings(data_dir=data_dir)) as store:
        yield store
