"""PostgreSQL failures on a private cluster: server down and back, killed backends, cancels."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from concierge.observability import Status
from concierge.protocol import Channel, InboundMessage, utcnow
from concierge.settings import StoreSettings
from concierge.store import Monitor, StoreUnavailable, migrate, open_store, run_monitor
from concierge.store.postgres import PostgresStore, execute_admin
from tests.pgserver import PrivatePostgres
from tests.store.conftest import fresh_schema
from tests.stores import store_settings
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def inbound(external_id: str) -> InboundMessage:
    return InboundMessage(
        correlation_id=f"cid-{external_id}",
        channel=Channel.TELEGRAM,
        user_key="telegram:1",
        chat_id="1",
        external_id=external_id,
        text="Bonjour",
        received_at=utcnow(),
    )


@pytest.fixture
async def cluster(private_pg: PrivatePostgres) -> AsyncIterator[PrivatePostgres]:
    """The private cluster, running at the start and at the end of each test."""
    if not private_pg.running:
        await trio.to_thread.run_sync(private_pg.start)
    yield private_pg
    if not private_pg.running:
        await trio.to_thread.run_sync(private_pg.start)


@pytest.fixture
async def pg_settings(
    cluster: PrivatePostgres, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> StoreSettings:
    made = store_settings(
        data_dir=tmp_path,
        database_url=await fresh_schema(cluster.dsn),
        pool_size=2,
        command_timeout_s=2.0,
        statement_timeout_s=1.0,
    )
    await migrate(made)
    return made


async def test_server_down_gives_store_unavailable_and_the_store_reconnects_when_back(
    pg_settings: StoreSettings, cluster: PrivatePostgres
) -> None:
    async with open_store(pg_settings) as store, trio.open_nursery() as nursery:
        monitor = Monitor.of_store(backend=store.backend, ping_timeout_s=2.0)
        await nursery.start(
            partial(
                run_monitor,
                ping=store.ping,
                monitor=monitor,
                interval_s=0.2,
                down_interval_s=0.1,
            )
        )
        await store.accept(inbound("before"))
        await trio.to_thread.run_sync(cluster.stop)
        failures: list[BaseException] = []

        async def deliver(n: int) -> None:
            try:
                await store.accept(inbound(f"during-{n}"))
            except StoreUnavailable as exc:
                failures.append(exc)

        with trio.fail_after(15):  # bounded: the store fails fast instead of hanging
            async with trio.open_nursery() as callers:
                for n in range(20):
                    callers.start_soon(deliver, n)
            assert len(failures) == 20
            with pytest.raises(StoreUnavailable):
                await store.pending_inbox()
            await monitor.wait_unavailable()
        (check,) = monitor.health_checks()
        assert (check.key, check.status) == ("postgres:responseTime", Status.FAIL)
        assert check.output is not None
        await trio.to_thread.run_sync(cluster.start)
        with trio.fail_after(20):
            await monitor.wait_available()
        (check,) = monitor.health_checks()
        assert check.status is not Status.FAIL
        assert (await store.accept(inbound("after"))).is_new
        assert [r.external_id for r in await store.pending_inbox()] == ["before", "after"]
        nursery.cancel_scope.cancel()


async def test_opening_while_the_server_is_down_raises_store_unavailable(
    pg_settings: StoreSettings, cluster: PrivatePostgres
) -> None:
    await trio.to_thread.run_sync(cluster.stop)
    with trio.fail_after(15), pytest.raises(StoreUnavailable):
        async with open_store(pg_settings):
            pass


async def test_a_terminated_backend_is_replaced_by_the_pool(
    pg_settings: StoreSettings, cluster: PrivatePostgres
) -> None:
    async with open_store(pg_settings) as store:
        assert isinstance(store, PostgresStore)
        before = await store.fetchval("SELECT pg_backend_pid()")
        await execute_admin(
            cluster.dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'concierge'",
        )
        await store.ping()
        assert (await store.accept(inbound("after-kill"))).is_new
        after = await store.fetchval("SELECT pg_backend_pid()")
        assert after != before


async def test_cancelling_a_slow_query_leaves_the_connection_usable(
    pg_settings: StoreSettings, cluster: PrivatePostgres
) -> None:
    one = store_settings(
        data_dir=pg_settings.data_dir,
        database_url=pg_settings.database_url,
        pool_size=1,
        command_timeout_s=5.0,
        statement_timeout_s=5.0,
    )
    async with open_store(one) as store:
        assert isinstance(store, PostgresStore)
        pid = await store.fetchval("SELECT pg_backend_pid()")
        with trio.move_on_after(0.3) as scope:
            await store.fetchval("SELECT pg_sleep(4)")
        assert scope.cancelled_caught
        assert await store.fetchval("SELECT pg_backend_pid()") == pid
        still_running = await store.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE 'SELECT pg_sleep(4)%' AND pid <> pg_backend_pid()"
        )
        assert still_running == 0
        assert store.pool_statistics()["size"] == 1


async def test_statement_timeout_fails_the_call_and_keeps_the_connection(
    pg_settings: StoreSettings,
) -> None:
    async with open_store(pg_settings) as store:
        assert isinstance(store, PostgresStore)
        with pytest.raises(StoreUnavailable, match="QueryCanceled"):
            await store.fetchval("SELECT pg_sleep(3)")
        assert await store.fetchval("SELECT 42") == 42


async def test_a_hung_backend_times_out_instead_of_hanging_and_the_store_recovers(
    pg_settings: StoreSettings,
) -> None:
    one = store_settings(
        data_dir=pg_settings.data_dir,
        database_url=pg_settings.database_url,
        pool_size=1,
        command_timeout_s=1.0,
        statement_timeout_s=5.0,
    )
    async with open_store(one) as store:
        assert isinstance(store, PostgresStore)
        pid = int(await store.fetchval("SELECT pg_backend_pid()"))
        os.kill(pid, signal.SIGSTOP)
        try:
            with trio.fail_after(10), pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            os.kill(pid, signal.SIGCONT)

        async def answering() -> bool:
            try:
                await store.ping()
            except StoreUnavailable:
                return False
            return True

        await eventually(answering, "the pool to replace or reset the timed-out connection")
        assert (await store.accept(inbound("after-hang"))).is_new
