"""What only the embedded store does: its file, its pragmas, migrating itself at open."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from concierge.protocol import Channel, InboundMessage, utcnow
from concierge.store import StoreError, StoreUnavailable, migrate, open_store
from concierge.store.connect import sqlite_path
from concierge.store.migrations import latest_version
from concierge.store.sqlite import SqliteStore, ts
from tests.stores import store_settings
from tests.waiting import eventually

ALL_VERSIONS = list(range(1, latest_version("sqlite") + 1))

pytestmark = pytest.mark.anyio

ALL_VERSIONS = list(range(1, latest_version("sqlite") + 1))


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
    assert await migrate(settings) == ALL_VERSIONS
    assert await migrate(settings) == []
    with sqlite3.connect(sqlite_path(settings)) as conn:
        applied = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert [version for version, _ in applied] == ALL_VERSIONS
    assert applied[0] == (1, "initial")


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
            InboundMessage(
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


class Blocker:
    """Work that holds the worker thread until released, so calls queue behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> str:
        self.entered.set()
        self.release.wait(10)
        return "blocked"

    async def wait_entered(self) -> None:
        await eventually(self.entered.is_set, "the blocker to hold the worker thread")


async def test_calls_queued_while_the_thread_is_busy_share_one_hop_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        assert isinstance(store, SqliteStore)
        blocker = Blocker()
        results: dict[str, object] = {}

        async def keep(name: str, work: Callable[[], Awaitable[object]]) -> None:
            try:
                results[name] = await work()
            except Exception as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep, "blocker", partial(store._run, blocker))
            await blocker.wait_entered()
            hops_before = store.hops.hops
            nursery.start_soon(keep, "write", partial(store.set_cursor, "x", "1"))
            nursery.start_soon(keep, "bad", partial(store._run, _raise_integrity))
            nursery.start_soon(keep, "busy", partial(store._run, _raise_locked))
            nursery.start_soon(
                keep, "read", partial(store._run, lambda c: c.execute("SELECT 2").fetchone()[0])
            )
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert results["blocker"] == "blocked"
        assert results["write"] is None
        assert isinstance(results["bad"], StoreError)
        assert not isinstance(results["bad"], StoreUnavailable)
        assert "UNIQUE" in str(results["bad"])
        assert isinstance(results["busy"], StoreUnavailable)
        assert results["read"] == 2
        assert store.hops.hops == hops_before + 2  # the blocker's hop ends, then one for the rest
        assert await store.get_cursor("x") == "1"


def _raise_integrity(conn: sqlite3.Connection) -> None:
    raise sqlite3.IntegrityError("UNIQUE constraint failed")


def _raise_locked(conn: sqlite3.Connection) -> None:
    raise sqlite3.OperationalError("database is locked")


async def test_a_caller_cancelled_while_queued_runs_nothing_and_the_others_are_served(
    tmp_path: Path,
) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        assert isinstance(store, SqliteStore)
        blocker = Blocker()
        served: list[str] = []
        scopes: list[trio.CancelScope] = []

        async def set_cursor(name: str) -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await store.set_cursor(name, "1")
                served.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run, blocker)
            await blocker.wait_entered()
            for name in ("before", "cancelled", "after"):
                nursery.start_soon(set_cursor, name)
                await trio.testing.wait_all_tasks_blocked()
            scopes[1].cancel()
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert sorted(served) == ["after", "before"]
        assert await store.get_cursor("cancelled") is None
        assert await store.get_cursor("before") == await store.get_cursor("after") == "1"


async def test_a_caller_cancelled_during_its_hop_waits_for_the_work_like_a_thread_call(
    tmp_path: Path,
) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        assert isinstance(store, SqliteStore)
        blocker = Blocker()
        ended: list[bool] = []

        def write_then_block(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO channel_cursors VALUES ('during', '1', 'now')")
            return blocker(conn)

        async def caller(scope: trio.CancelScope) -> None:
            with scope:
                await store._run(write_then_block)
                await trio.lowlevel.checkpoint()
            ended.append(scope.cancelled_caught)

        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, scope)
            await blocker.wait_entered()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert ended == []  # still waiting for its work in the thread
            blocker.release.set()
        assert ended == [True]
        assert await store.get_cursor("during") == "1"


async def test_a_call_after_the_store_closed_is_refused(tmp_path: Path) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        pass
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get_cursor("x")


async def test_concurrent_opens_share_a_transaction_and_each_gets_its_own_conversation(
    tmp_path: Path,
) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        assert isinstance(store, SqliteStore)
        blocker = Blocker()
        conversations: dict[str, int] = {}

        async def open_one(user_key: str) -> None:
            start = await store.open_conversation(
                Channel.TELEGRAM, user_key, pending_limit=4, recent_limit=4
            )
            conversations[user_key] = start.conversation.conversation_id

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run, blocker)
            await blocker.wait_entered()
            for i in range(20):
                nursery.start_soon(open_one, f"telegram:{i}")
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert len(set(conversations.values())) == 20
        assert store.open_committer.statistics().largest_batch > 1
