"""WAHA side actors: seen and typing while a turn runs (stopped at its end or a cap), and the session watch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx2
import pytest
import trio

from actors import PresenceBoard, WahaSessionWatch, run_waha_presence, run_waha_session_watch
from concierge.channels import WahaClient
from concierge.observability import Check, Status
from concierge.protocol import Channel, TurnEnded, TurnStarted
from tests.fakes.waha_api import FakeWaha
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

CHAT = "33612345678@c.us"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWaha]:
    async with FakeWaha.serve(api_key="k") as waha:
        yield waha


async def run(
    fake: FakeWaha,
    script: Callable[[PresenceBoard], Awaitable[None]],
    *,
    interval_s: float,
    cap_s: float = 120.0,
) -> None:
    board = PresenceBoard()
    async with httpx2.AsyncClient(timeout=5) as http, trio.open_nursery() as nursery:
        client = WahaClient(http=http, base_url=fake.url, session="default", api_key="k")
        await nursery.start(
            partial(
                run_waha_presence,
                client=client,
                presence=board,
                interval_s=interval_s,
                cap_s=cap_s,
            )
        )
        await script(board)
        nursery.cancel_scope.cancel()


async def test_a_turn_shows_seen_then_typing_until_it_ends(fake: FakeWaha) -> None:
    async def script(send: PresenceBoard) -> None:
        send.post(TurnStarted(channel=Channel.WAHA, chat_id=CHAT, correlation_id="c1"))
        await eventually(
            lambda: [e for e, _ in fake.calls()].count("startTyping") >= 2,
            "typing to be shown twice",
        )
        send.post(TurnEnded(channel=Channel.WAHA, chat_id=CHAT, correlation_id="c1"))
        await eventually(lambda: ("stopTyping", CHAT) in fake.calls(), "typing to stop")

    await run(fake, script, interval_s=0.05)
    endpoints = [e for e, _ in fake.calls()]
    assert endpoints[:2] == ["sendSeen", "startTyping"]
    assert endpoints[-1] == "stopTyping"


async def test_typing_stops_at_the_cap_without_an_end(fake: FakeWaha) -> None:
    async def script(send: PresenceBoard) -> None:
        send.post(TurnStarted(channel=Channel.WAHA, chat_id=CHAT, correlation_id="c1"))
        await eventually(lambda: ("stopTyping", CHAT) in fake.calls(), "typing to stop at the cap")

    await run(fake, script, interval_s=0.05, cap_s=0.2)


async def test_a_stale_turn_end_is_ignored(fake: FakeWaha) -> None:
    async def script(send: PresenceBoard) -> None:
        send.post(TurnStarted(channel=Channel.WAHA, chat_id=CHAT, correlation_id="new"))
        await eventually(lambda: ("startTyping", CHAT) in fake.calls(), "typing to start")
        send.post(TurnEnded(channel=Channel.WAHA, chat_id=CHAT, correlation_id="old"))
        typed = typing_count()
        await eventually(
            lambda: typing_count() >= typed + 2, "typing to go on after the stale end"
        )  # still typing after the stale end
        assert ("stopTyping", CHAT) not in fake.calls()
        send.post(TurnEnded(channel=Channel.WAHA, chat_id=CHAT, correlation_id="new"))
        await eventually(
            lambda: ("stopTyping", CHAT) in fake.calls(), "typing to stop at the turn's own end"
        )

    def typing_count() -> int:
        return [e for e, _ in fake.calls()].count("startTyping")

    await run(fake, script, interval_s=0.05)
    assert {chat for _, chat in fake.calls()} == {CHAT}
    assert [e for e, _ in fake.calls()].count("stopTyping") == 1


async def test_the_session_watch_passes_when_working_and_warns_otherwise(fake: FakeWaha) -> None:
    watch = WahaSessionWatch(session="default")
    assert [c.status for c in watch.health_checks()] == [Status.WARN]  # not checked yet
    async with httpx2.AsyncClient(timeout=5) as http, trio.open_nursery() as nursery:
        client = WahaClient(http=http, base_url=fake.url, session="default", api_key="k")
        await nursery.start(
            partial(run_waha_session_watch, client=client, watch=watch, interval_s=0.02)
        )
        await eventually(lambda: watch.status == "WORKING", "the session to be seen WORKING")
        [check] = watch.health_checks()
        assert (check.status, check.observed_value, check.component_id) == (
            Status.PASS,
            "WORKING",
            "default",
        )
        fake.session_status = "SCAN_QR_CODE"
        await eventually(
            lambda: watch.status == "SCAN_QR_CODE", "the session to be seen SCAN_QR_CODE"
        )
        [check] = watch.health_checks()
        assert check.status is Status.WARN
        [gauge] = watch.metrics()
        assert [s.value for s in gauge.samples] == [0.0]
        nursery.cancel_scope.cancel()


async def first_check(url: str, api_key: str | None = None) -> Check:
    """The session check after the watch's first question to WAHA at ``url``."""
    watch = WahaSessionWatch(session="default")
    async with httpx2.AsyncClient(timeout=2) as http, trio.open_nursery() as nursery:
        client = WahaClient(http=http, base_url=url, session="default", api_key=api_key)
        await nursery.start(
            partial(run_waha_session_watch, client=client, watch=watch, interval_s=0.02)
        )
        await eventually(lambda: watch.checked_at is not None, "a first session check")
        nursery.cancel_scope.cancel()
    [check] = watch.health_checks()
    assert check.status is Status.WARN
    return check


async def test_the_session_watch_warns_when_waha_does_not_answer() -> None:
    async with FakeWaha.serve() as gone:
        url = gone.url
    check = await first_check(url)
    assert check.output is not None
    assert "did not answer" in check.output


async def test_the_session_watch_says_what_was_wrong_with_an_answer(fake: FakeWaha) -> None:
    fake.session_status = None  # 200 with no session status in the body
    check = await first_check(fake.url, api_key="k")
    assert check.output == "WAHA answered 200 without a session status"


async def test_the_session_watch_says_waha_refused() -> None:
    async with FakeWaha.serve(api_key="right") as waha:
        check = await first_check(waha.url, api_key="wrong")
    assert check.output is not None
    assert check.output.startswith("WAHA refused the session status request: 401")
