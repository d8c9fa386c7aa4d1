"""What only the embedded store does: its file, its pragmas, migrating itself at open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from concierge.protocol import Channel, utcnow
from concierge.store.base import NewInbound
from concierge.store.errors import StoreUnavailable
from concierge.store.migrate import migrate
from concierge.store.open import open_store, sqlite_path
from concierge.store.sqlite import SqliteStore, ts
from tests.store.conftest import store_settings

pytestmark = pytest.mark.anyio


async def test_the_store_lives_in_the_data_dir_and_migrates_itself_at_open(tmp_path: Path) -> None:
    settings = store_settings(data_dir=tmp_path / "var")
    async with open_store(settings) as store:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "var" / "concierge.sqlite3" == sqlite_path(settings)
        journal, synchronous, foreign_keys = await store._run(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
            )
        )
    assert (journal, synchronous, foreign_keys) == ("wal", 2, 1)  # 2 = FULL
    assert await migrate(settings) == []


async def test_migrate_on_a_new_data_dir_applies_every_version_once(tmp_path: Path) -> None:
    settings = store_settings(data_dir=tmp_path / "new")
    assert await migrate(settings) == [1]
    assert await migrate(settings) == []
    with sqlite3.connect(sqlite_path(settings)) as conn:
        assert conn.execute("SELECT version, name FROM schema_migrations").fetchall() == [
            (1, "initial")
        ]


async def test_an_unusable_data_dir_raises_store_unavailable_naming_the_file(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match=r"concierge\.sqlite3"):
        async with open_store(store_settings(data_dir=blocker)):
            pass


async def test_a_second_process_can_write_while_the_store_is_open(tmp_path: Path) -> None:
    settings = store_settings(data_dir=tmp_path)
    async with open_store(settings) as store:
        await store.accept(
            NewInbound(
                correlation_id="c",
                channel=Channel.TELEGRAM,
                user_key="telegram:1",
                chat_id="1",
                external_id="1",
                text="hello",
                received_at=utcnow(),
            )
        )
        with sqlite3.connect(sqlite_path(settings), timeout=5) as other:
            other.execute("INSERT INTO channel_cursors VALUES ('x', '1', ?)", (ts(utcnow()),))
        assert await store.get_cursor("x") == "1"


def test_instants_are_fixed_width_utc_text_and_naive_ones_are_refused() -> None:
    assert ts(utcnow()).endswith("Z")
    assert len(ts(utcnow())) == len("2026-11-27T13:15:38.000000Z")
    with pytest.raises(ValueError, match="naive"):
        ts(utcnow().replace(tzinfo=None))
