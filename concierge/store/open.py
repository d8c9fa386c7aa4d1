"""Open the configured durable store (SQLite unless ``DATABASE_URL`` is set), and forget a user.

``open_store`` is an async context manager because the store owns a task: the
group-commit flusher that batches concurrent inbox writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import structlog

from concierge.settings import StoreSettings
from concierge.store.base import Store
from concierge.store.errors import UnknownUser
from concierge.store.migrate import migrate
from concierge.store.postgres import open_postgres
from concierge.store.sqlite import FILE_NAME, open_sqlite

__all__ = ["Forgotten", "forget_user", "migrate", "open_store", "sqlite_path"]

log = structlog.get_logger(__name__)


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


@attrs.frozen(kw_only=True)
class Forgotten:
    user_id: int
    rows: int


def _parse_user(user: int | str) -> int | str:
    if isinstance(user, int):
        return user
    text = user.strip()
    if text.isdigit():
        return int(text)
    channel, sep, rest = text.partition(":")
    if not sep or not channel or not rest:
        raise ValueError(
            f"--user {user!r}: expected an internal user id (digits) or a channel identity "
            "such as telegram:123456789 or waha:221770000000@c.us"
        )
    return text


async def forget_user(settings: StoreSettings, user: int | str) -> Forgotten:
    """Erase one user's messages, inbox/outbox rows and identities (``concierge forget``).

    ``user`` is the internal user id (an int or a string of digits) or a channel
    identity ``<channel>:<id>`` (``telegram:123456789``). Interaction metadata stays,
    attached to an anonymous user row. Raises ``UnknownUser`` when nobody matches.
    """
    who = _parse_user(user)
    async with open_store(settings) as store:
        if isinstance(who, int):
            user_id = who
        else:
            row = await store.user_for_key(who)
            if row is None:
                raise UnknownUser(f"no user has the identity {who!r}")
            user_id = row.user_id
        rows = await store.forget_user(user_id)
    if rows == 0:
        raise UnknownUser(f"no user has the id {user_id}")
    log.info("store.user_forgotten", user_id=user_id, rows=rows)
    return Forgotten(user_id=user_id, rows=rows)
