"""The troubleshooting guide cannot drift: every row of its table is produced here.

For each row of ``docs/troubleshooting.md`` a scenario drives the real component into
that failure; the named ``/health`` check must take the named status and the named
event must be logged. A row without a scenario, or a scenario without a row, fails.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import trio
from structlog.testing import capture_logs

from actors import OutboxStats, WahaSessionWatch, run_waha_session_watch
from concierge.channels import WahaClient
from concierge.channels.telegram_http import TelegramWebhook
from concierge.observability import Check, HealthBoard
from concierge.protocol import Channel, Outcome
from concierge.store import Monitor
from supervisors import ChildSpec, RestartIntensityExceeded, Supervisor
from tests.actors.test_outbox import enqueue, outbox
from tests.actors.test_telegram_poller import CONFLICT, environment, poller
from tests.channels.telegram_support import wired_ingest
from tests.channels.test_waha_http import make_harness, signed
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.waha_api import FakeWaha
from tests.providers.pool_helpers import ask_pool, running_pool
from tests.providers.scripted import (
    Credit,
    Fail,
    ScriptedAdapter,
    ScriptedCreditAdapter,
    pool_settings,
    provider_settings,
)
from tests.stores import sqlite_store
from tests.waiting import eventually

GUIDE = Path(__file__).parents[2] / "docs" / "troubleshooting.md"

Produced = tuple[list[Check], list[MutableMapping[str, Any]]]
Scenario = Callable[[Path], Awaitable[Produced]]


@attrs.frozen
class Row:
    id: str
    check: str
    status: str
    event: str


def rows() -> list[Row]:
    """The guide's table: id, what you see, check, status, event, what to do."""
    found = []
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "id" or not re.fullmatch(r"[a-z][a-z0-9-]+", cells[0]):
            continue
        check, event = (re.fullmatch(r"`([^`]+)`", c) for c in (cells[2], cells[4]))
        assert check, f"{cells[0]}: the check must be `code`"
        assert event, f"{cells[0]}: the event must be `code`"
        found.append(Row(id=cells[0], check=check[1], status=cells[3], event=event[1]))
    return found


SCENARIOS: dict[str, Scenario] = {}
MOCK_CLOCK = {"providers-failing", "breaker-open", "credits-low", "telegram-poll-conflict"}
MOCK_CLOCK |= {"supervisor-gave-up", "backlog-growing"}


def scenario(row_id: str) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        SCENARIOS[row_id] = run
        return run

    return register


@scenario("postgres-down")
async def _postgres_down(tmp_path: Path) -> Produced:
    monitor = Monitor.of_store(backend="postgres")  # what the daemon's store ping reports to
    with capture_logs() as logs:
        monitor.record_failure("connection refused")
    return list(monitor.health_checks()), logs


@scenario("redis-down")
async def _redis_down(tmp_path: Path) -> Produced:
    monitor = Monitor.of_cache(backend="redis")
    with capture_logs() as logs:
        monitor.record_failure("redis ping took longer than 0.5 s")
    return list(monitor.health_checks()), logs


TRANSIENT = Fail(outcome=Outcome.TRANSIENT, detail="503 unavailable")


async def _failing_pool(consecutive: int) -> Produced:
    adapters = [ScriptedAdapter("primary", default=TRANSIENT)]
    adapters.append(ScriptedAdapter("secondary", default=TRANSIENT))
    settings = pool_settings(
        provider_settings("primary"), provider_settings("secondary"), consecutive=consecutive
    )
    with capture_logs() as logs:
        async with running_pool(adapters, settings) as (pool, inbox):
            for i in range(3):
                await ask_pool(inbox, cid=f"c{i}")
            checks = list(pool.health_checks())
    return checks, logs


@scenario("providers-failing")
async def _providers_failing(tmp_path: Path) -> Produced:
    return await _failing_pool(consecutive=1)


@scenario("breaker-open")
async def _breaker_open(tmp_path: Path) -> Produced:
    return await _failing_pool(consecutive=2)


@scenario("credits-low")
async def _credits_low(tmp_path: Path) -> Produced:
    router = ScriptedCreditAdapter("openrouter")
    router.credits["k1"] = Credit(limit=10.0, remaining=0.0, usage=10.0)
    settings = pool_settings(provider_settings("openrouter", kind="openai", keys=("k1", "k2")))
    with capture_logs() as logs:
        async with running_pool([router], settings) as (pool, _):
            await trio.sleep(0.1)  # the first credit poll runs as the pool starts
            checks = list(pool.health_checks())
    return checks, logs


@scenario("telegram-webhook-unauthorized")
async def _telegram_webhook_unauthorized(tmp_path: Path) -> Produced:
    async def body() -> bytes:
        raise AssertionError("the body is never read before the secret matched")

    async with sqlite_store(tmp_path) as store, wired_ingest(store) as wired:
        webhook = TelegramWebhook(ingest=wired.ingest, secret="the-right-secret")
        with capture_logs() as logs:
            for given in (None, "a-wrong-secret", "another"):
                await webhook.handle(given, body)
    [check] = webhook.stats.health_checks()
    assert check.details is not None
    assert check.details["unauthorized"] == 3
    return [check], logs


@scenario("waha-webhook-rejected")
async def _waha_webhook_rejected(tmp_path: Path) -> Produced:
    async with sqlite_store(tmp_path) as store:
        async for harness in make_harness(store):
            body = b'{"event":"message","session":"default","payload":{}}'
            with capture_logs() as logs:
                await harness.post(body, signed(body, key="not-the-key"))
            checks = list(harness.stats.health_checks())
    [check] = checks
    assert check.details is not None
    assert check.details["deliveries"]["rejected"] == 1
    return checks, logs


@scenario("telegram-poll-conflict")
async def _telegram_poll_conflict(tmp_path: Path) -> Produced:
    async with environment(tmp_path) as (fake, client, wired):
        fake.fail_next("getUpdates", CONFLICT, CONFLICT, CONFLICT)
        with capture_logs() as logs:
            async with poller(fake, client, wired) as p:
                await eventually(lambda: p.stats.conflicts >= 2, "two conflicts")
                checks = list(p.stats.health_checks())
    return checks, logs


@scenario("waha-session-not-working")
async def _waha_session_not_working(tmp_path: Path) -> Produced:
    watch = WahaSessionWatch(session="default")
    async with FakeWaha.serve(api_key="k") as waha, httpx2.AsyncClient(timeout=5) as http:
        waha.session_status = "SCAN_QR_CODE"
        client = WahaClient(http=http, base_url=waha.url, session="default", api_key="k")
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(run_waha_session_watch, client=client, watch=watch, interval_s=0.02)
                )
                await eventually(lambda: watch.status == "SCAN_QR_CODE", "the session status")
                nursery.cancel_scope.cancel()
    return list(watch.health_checks()), logs


@scenario("supervisor-gave-up")
async def _supervisor_gave_up(tmp_path: Path) -> Produced:
    async def crashing(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise RuntimeError("the database password is wrong")

    root = Supervisor(name="root", children=[ChildSpec(id="flaky", start=crashing)])
    board = HealthBoard(version="test")
    board.watch_supervisor(root.statistics)
    with capture_logs() as logs, pytest.raises(RestartIntensityExceeded):
        await root.run()
    return board.checks(), logs


@scenario("backlog-growing")
async def _backlog_growing(tmp_path: Path) -> Produced:
    async def full(store: Any) -> None:
        for i in range(OutboxStats(channel=Channel.TELEGRAM).backlog_warn + 5):
            await enqueue(store, 1000 + i, f"réponse {i}")

    with capture_logs() as logs:
        async with outbox(tmp_path, before_start=full) as h:
            h.fake.fail_next("sendMessage", *[FakeTelegram.server_error()] * 50)
            await eventually(lambda: h.stats.retries > 0, "a retried send")
            checks = list(h.stats.health_checks())
    return checks, logs


def _params() -> list[Any]:
    return [
        pytest.param(row, id=row.id, marks=[pytest.mark.autojump] if row.id in MOCK_CLOCK else [])
        for row in rows()
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("row", _params())
async def test_the_guide_row_is_what_the_component_shows(row: Row, tmp_path: Path) -> None:
    assert row.id in SCENARIOS, f"{row.id}: no scenario produces this row"
    checks, logs = await SCENARIOS[row.id](tmp_path)
    shown = {(c.key, c.status.value) for c in checks}
    assert (row.check, row.status) in shown, shown
    assert row.event in {e["event"] for e in logs}


def test_every_scenario_has_its_row_and_the_readme_links_the_guide() -> None:
    assert set(SCENARIOS) == {row.id for row in rows()}
    assert "(docs/troubleshooting.md)" in (GUIDE.parents[1] / "README.md").read_text()


def test_the_example_commands_name_a_real_check_and_event() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    keys = {row.check for row in rows()}
    events = {row.event for row in rows()}
    assert set(re.findall(r'\.checks\["([^"]+)"\]', text)) <= keys
    assert set(re.findall(r'\.event == "([^"]+)"', text)) <= events
