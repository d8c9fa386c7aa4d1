"""``POST /webhooks/waha`` end to end through Quart: the real SQLite store, a real Ingest, a drained router channel."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import structlog
import trio
from quart_trio import QuartTrio

from concierge.channels import WahaWebhookStats, waha_blueprint, waha_startup_checks
from concierge.domain import Ingest, forget_user
from concierge.protocol import Accepted, Channel, Inbound, InboundKind, InboundMessage
from concierge.settings import SettingsError, WahaSettings
from concierge.store import Store, StoreUnavailable
from tests.fakes.waha_api import RetryPolicy, WahaWebhookPusher, message_event
from tests.stores import sqlite_store

pytestmark = pytest.mark.anyio

KEY = "my-secret-key"
DOC_BODY = b'{"event":"message","session":"default","engine":"WEBJS"}'
PATH = "/webhooks/waha"


def waha_settings(**changes: Any) -> WahaSettings:
    base = WahaSettings(
        url="http://127.0.0.1:3000",
        api_key="waha-test-key",
        session="default",
        hmac_key=KEY,
        allow_unsigned=False,
        timestamp_window_s=600,
        allow_groups=False,
    )
    return attrs.evolve(base, **changes)


class FlakyStore:
    """The real store, except that the first ``failures`` inbox writes find it unavailable."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures

    async def accept(self, message: InboundMessage) -> Accepted:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database is restarting")
        return await self._store.accept(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@attrs.define
class Harness:
    store: Store
    ingest: Ingest
    routed: trio.MemoryReceiveChannel[Inbound]
    stats: WahaWebhookStats
    client: Any
    settings: WahaSettings

    def pusher(self, *, key: str | None = KEY, attempts: int = 1) -> WahaWebhookPusher:
        return WahaWebhookPusher.over_test_client(
            self.client, PATH, hmac_key=key, policy=RetryPolicy(attempts=attempts, time_scale=0.001)
        )

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(PATH, data=body, headers=headers)
        return response.status_code, json.loads(await response.get_data())

    async def inbox(self) -> list[Any]:
        return list(await self.store.pending_inbox())

    def drain(self) -> list[Inbound]:
        routed: list[Inbound] = []
        while True:
            try:
                routed.append(self.routed.receive_nowait())
            except trio.WouldBlock:
                return routed


@pytest.fixture
async def real_store(tmp_path: Path) -> AsyncIterator[Store]:
    async with sqlite_store(tmp_path) as store:
        yield store


async def make_harness(store: Any, settings: WahaSettings | None = None) -> AsyncIterator[Harness]:
    send, receive = trio.open_memory_channel[Inbound](100)
    ingest = Ingest(store=store, router=send, forward_timeout_s=1.0)
    stats = WahaWebhookStats()
    settings = settings or waha_settings()
    app = QuartTrio(__name__)
    app.register_blueprint(
        waha_blueprint(ingest=ingest, settings=settings, store=store, stats=stats)
    )
    with send, receive:
        yield Harness(
            store=store,
            ingest=ingest,
            routed=receive,
            stats=stats,
            client=app.test_client(),
            settings=settings,
        )


@pytest.fixture
async def harness(real_store: Store) -> AsyncIterator[Harness]:
    async for h in make_harness(real_store):
        yield h


def signed(body: bytes, *, stamp_ms: int | None = None, key: str = KEY) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-webhook-request-id": "req-1",
        "x-webhook-timestamp": str(int(time.time() * 1000) if stamp_ms is None else stamp_ms),
        "x-webhook-hmac": hmac.new(key.encode(), body, hashlib.sha512).hexdigest(),
        "x-webhook-hmac-algorithm": "sha512",
    }


# -- T15: authenticity -------------------------------------------------------------------------
async def test_documented_vector_passes_the_signature_check(harness: Harness) -> None:
    status, body = await harness.post(DOC_BODY, signed(DOC_BODY))
    assert status == 400  # authentic, but a message event without a payload
    assert "`payload`" in body["error"]
    assert await harness.inbox() == []


async def test_a_signed_message_is_committed_and_routed(harness: Harness) -> None:
    event = message_event(
        chat_id="33612345678@c.us", text="Bonjour", message_id="false_33612345678@c.us_AB12"
    )
    delivery = await harness.pusher().deliver(event)
    assert delivery.statuses == [200]
    assert json.loads(delivery.attempts[0].body)["status"] == "accepted"
    [row] = await harness.inbox()
    assert (row.channel, row.user_key, row.chat_id) == (
        Channel.WAHA,
        "waha:33612345678@c.us",
        "33612345678@c.us",
    )
    assert (row.external_id, row.text, row.kind) == (
        "false_33612345678@c.us_AB12",
        "Bonjour",
        InboundKind.TEXT,
    )
    [routed] = harness.drain()
    assert routed.inbox_id == row.inbox_id
    assert routed.correlation_id == row.correlation_id


def _tamper_byte(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    changed = bytearray(body)
    changed[-3] ^= 0x01
    return bytes(changed), headers


def _respace(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(json.loads(body), indent=1).encode(), headers


def _algorithm(value: str | None) -> Any:
    def change(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        headers = dict(headers)
        if value is None:
            del headers["x-webhook-hmac-algorithm"]
        else:
            headers["x-webhook-hmac-algorithm"] = value
        return body, headers

    return change


def _hmac(transform: Any) -> Any:
    def change(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return body, headers | {"x-webhook-hmac": transform(headers["x-webhook-hmac"])}

    return change


def _drop(name: str) -> Any:
    def change(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        return body, {k: v for k, v in headers.items() if k != name}

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_tamper_byte, "signature_invalid"),
        (_respace, "signature_invalid"),
        (_algorithm("sha256"), "algorithm_invalid"),
        (_algorithm(None), "algorithm_invalid"),
        (_hmac(str.upper), "signature_invalid"),
        (_hmac(lambda h: h[:64]), "signature_invalid"),
        (_hmac(lambda h: h[:-1]), "signature_invalid"),
        (_drop("x-webhook-hmac"), "signature_missing"),
    ],
    ids=[
        "byte-changed",
        "respaced",
        "sha256",
        "algorithm-missing",
        "uppercased",
        "truncated",
        "one-char-short",
        "hmac-missing",
    ],
)
async def test_inauthentic_deliveries_get_401_and_leave_no_inbox_row(
    harness: Harness, change: Any, reason: str
) -> None:
    body = WahaWebhookPusher.encode(message_event())
    body, headers = change(body, signed(body))
    status, answer = await harness.post(body, headers)
    assert status == 401
    assert answer["reason"] == reason
    assert await harness.inbox() == []
    assert harness.drain() == []
    assert harness.stats.total("rejected") == 1


async def test_a_sender_with_the_wrong_key_never_gets_in_despite_retries(harness: Harness) -> None:
    delivery = await harness.pusher(key="stolen-guess", attempts=3).deliver(message_event())
    assert delivery.statuses == [401, 401, 401]
    assert await harness.inbox() == []


async def test_a_signed_body_that_is_not_json_gets_400_naming_the_problem(harness: Harness) -> None:
    body = b"{not json"
    status, answer = await harness.post(body, signed(body))
    assert status == 400
    assert answer == {"error": "the body is not valid JSON", "reason": "malformed"}
    assert await harness.inbox() == []


async def test_a_signed_body_with_a_bad_sender_gets_400_naming_the_field(harness: Harness) -> None:
    event = message_event()
    event["payload"]["from"] = "nobody"
    body = WahaWebhookPusher.encode(event)
    status, answer = await harness.post(body, signed(body))
    assert status == 400
    assert "`payload.from`" in answer["error"]


# -- T2: duplicates ---------------------------------------------------------------------------
async def test_three_sequential_deliveries_make_one_inbox_row(harness: Harness) -> None:
    event = message_event()
    pusher = harness.pusher()
    deliveries = [await pusher.deliver(event) for _ in range(3)]
    assert len({d.request_id for d in deliveries}) == 3
    assert [json.loads(d.attempts[0].body)["status"] for d in deliveries] == [
        "accepted",
        "duplicate",
        "duplicate",
    ]
    assert len(await harness.inbox()) == 1
    assert len(harness.drain()) == 1


async def test_three_concurrent_deliveries_make_one_inbox_row(harness: Harness) -> None:
    event = message_event()
    pusher = harness.pusher()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(pusher.deliver, event)
    assert [d.statuses for d in pusher.deliveries] == [[200]] * 3
    assert len({d.request_id for d in pusher.deliveries}) == 3
    statuses = sorted(json.loads(d.attempts[0].body)["status"] for d in pusher.deliveries)
    assert statuses == ["accepted", "duplicate", "duplicate"]
    assert len(await harness.inbox()) == 1
    assert len(harness.drain()) == 1


async def test_duplicates_are_counted(harness: Harness) -> None:
    event = message_event()
    pusher = harness.pusher()
    for _ in range(3):
        await pusher.deliver(event)
    assert (harness.stats.total("accepted"), harness.stats.total("duplicate")) == (1, 2)


# -- what is ignored ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (message_event(from_me=True), "from_me"),
        (message_event(source="api"), "api_source"),
        (message_event(event="message.any"), "event"),
        (message_event(event="message.ack"), "event"),
        (message_event(chat_id="120363041234567890@g.us", participant="33612345678@c.us"), "group"),
        (message_event(chat_id="status@broadcast"), "broadcast"),
        (message_event(session="other"), "session"),
    ],
    ids=["from-me", "api-source", "message.any", "ack", "group", "status", "other-session"],
)
async def test_deliveries_needing_no_answer_get_200_and_no_row(
    harness: Harness, event: dict[str, Any], reason: str
) -> None:
    delivery = await harness.pusher().deliver(event)
    assert delivery.statuses == [200]
    assert json.loads(delivery.attempts[0].body) == {"status": "ignored", "reason": reason}
    assert await harness.inbox() == []
    assert harness.stats.counts[("ignored", reason)] == 1


async def test_session_status_events_are_acknowledged_and_counted(harness: Harness) -> None:
    event = {
        "id": "evt_1",
        "timestamp": int(time.time() * 1000),
        "event": "session.status",
        "session": "default",
        "payload": {"name": "default", "status": "WORKING"},
    }
    delivery = await harness.pusher().deliver(event)
    assert delivery.statuses == [200]
    assert harness.stats.counts[("ignored", "event")] == 1


async def test_groups_are_answered_when_allowed(real_store: Store) -> None:
    async for h in make_harness(real_store, waha_settings(allow_groups=True)):
        await h.pusher().deliver(
            message_event(chat_id="120363041234567890@g.us", participant="33612345678@c.us")
        )
        [row] = await h.inbox()
        assert row.chat_id == "120363041234567890@g.us"


async def test_s_whatsapp_net_senders_are_stored_as_c_us(harness: Harness) -> None:
    await harness.pusher().deliver(message_event(chat_id="33612345678@s.whatsapp.net"))
    [row] = await harness.inbox()
    assert (row.user_key, row.chat_id) == ("waha:33612345678@c.us", "33612345678@c.us")


async def test_media_without_text_is_stored_as_media(harness: Harness) -> None:
    await harness.pusher().deliver(message_event(text=None, has_media=True))
    [row] = await harness.inbox()
    assert (row.kind, row.text) == (InboundKind.MEDIA, "")


# -- store down ---------------------------------------------------------------------------------
async def test_an_unavailable_store_gets_503_with_retry_after_and_no_row(real_store: Store) -> None:
    async for h in make_harness(FlakyStore(real_store, failures=1)):
        body = WahaWebhookPusher.encode(message_event())
        response = await h.client.post(PATH, data=body, headers=signed(body))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert await h.inbox() == []


async def test_waha_retries_after_a_503_and_the_message_lands_once(real_store: Store) -> None:
    async for h in make_harness(FlakyStore(real_store, failures=2)):
        delivery = await h.pusher(attempts=5).deliver(message_event())
        assert delivery.statuses == [503, 503, 200]
        assert len(await h.inbox()) == 1
        assert h.stats.total("unavailable") == 2


# -- identities ---------------------------------------------------------------------------------
async def test_a_lid_sender_is_linked_to_its_phone_number_when_the_payload_names_it(
    harness: Harness,
) -> None:
    data = {
        "key": {"remoteJid": "4639135154355@lid", "remoteJidAlt": "33612345678@s.whatsapp.net"},
        "pushName": "Marie",
    }
    await harness.pusher().deliver(
        message_event(chat_id="4639135154355@lid", data=data, engine="NOWEB")
    )
    [row] = await harness.inbox()
    assert (row.user_key, row.chat_id) == ("waha:4639135154355@lid", "4639135154355@lid")
    lid_user = await harness.store.user_for_key("waha:4639135154355@lid")
    phone_user = await harness.store.user_for_key("waha:33612345678@c.us")
    assert lid_user is not None
    assert phone_user is not None
    assert lid_user.user_id == phone_user.user_id


async def test_a_known_phone_user_gains_the_lid(harness: Harness) -> None:
    existing = await harness.store.resolve_user(Channel.WAHA, "waha:33612345678@c.us")
    data = {"key": {"remoteJidAlt": "33612345678@s.whatsapp.net"}}
    await harness.pusher().deliver(message_event(chat_id="4639135154355@lid", data=data))
    lid_user = await harness.store.user_for_key("waha:4639135154355@lid")
    assert lid_user is not None
    assert lid_user.user_id == existing


async def test_two_known_users_are_not_merged(harness: Harness) -> None:
    phone = await harness.store.resolve_user(Channel.WAHA, "waha:33612345678@c.us")
    lid = await harness.store.resolve_user(Channel.WAHA, "waha:4639135154355@lid")
    data = {"key": {"remoteJidAlt": "33612345678@s.whatsapp.net"}}
    with structlog.testing.capture_logs() as logs:
        delivery = await harness.pusher().deliver(
            message_event(chat_id="4639135154355@lid", data=data)
        )
    assert delivery.statuses == [200]
    assert any(e["event"] == "waha.identities_conflict" for e in logs)
    phone_user = await harness.store.user_for_key("waha:33612345678@c.us")
    lid_user = await harness.store.user_for_key("waha:4639135154355@lid")
    assert (phone_user and phone_user.user_id, lid_user and lid_user.user_id) == (phone, lid)


# -- unsigned mode and start-up -------------------------------------------------------------------
async def test_unsigned_mode_accepts_unsigned_deliveries(real_store: Store) -> None:
    async for h in make_harness(real_store, waha_settings(hmac_key=None, allow_unsigned=True)):
        delivery = await h.pusher(key=None).deliver(message_event())
        assert delivery.statuses == [200]
        assert len(await h.inbox()) == 1


def test_startup_warns_at_every_start_when_unsigned_webhooks_are_allowed() -> None:
    settings = waha_settings(hmac_key=None, allow_unsigned=True)
    with structlog.testing.capture_logs() as logs:
        waha_startup_checks(settings)
        waha_startup_checks(settings)
    warnings = [e for e in logs if e["event"] == "waha.unsigned_webhooks_allowed"]
    assert len(warnings) == 2
    assert all(e["log_level"] == "warning" for e in warnings)


def test_startup_refuses_unsigned_webhooks_unless_allowed() -> None:
    with pytest.raises(SettingsError, match="WAHA_WEBHOOK_HMAC_KEY"):
        waha_startup_checks(waha_settings(hmac_key=None, allow_unsigned=False))


def test_startup_is_quiet_when_signed_and_keyed() -> None:
    with structlog.testing.capture_logs() as logs:
        waha_startup_checks(waha_settings())
    assert logs == []


# -- observability --------------------------------------------------------------------------------
async def test_outcomes_show_in_metrics_and_health(harness: Harness) -> None:
    await harness.pusher().deliver(message_event())
    await harness.pusher().deliver(message_event(from_me=True))
    await harness.pusher(key="wrong").deliver(message_event())
    [family] = list(harness.stats.metrics())
    samples = {(s.labels["outcome"], s.labels["reason"]): s.value for s in family.samples}
    assert samples[("accepted", "text")] == 1
    assert samples[("ignored", "from_me")] == 1
    assert samples[("rejected", "signature_invalid")] == 1
    [check] = list(harness.stats.health_checks())
    assert check.details["deliveries"]["accepted"] == 1


# -- over real HTTP -----------------------------------------------------------------------------
async def test_deliveries_over_loopback_http_through_hypercorn(real_store: Store) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async for h in make_harness(real_store):
        app = QuartTrio(__name__)
        app.register_blueprint(
            waha_blueprint(ingest=h.ingest, settings=h.settings, store=real_store)
        )
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(serve, app, config, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(timeout=5.0) as http:
                pusher = WahaWebhookPusher.over_http(
                    http, f"{binds[0]}{PATH}", hmac_key=KEY, policy=RetryPolicy(attempts=2)
                )
                event = message_event()
                first = await pusher.deliver(event)
                again = await pusher.deliver(event)
                forged = await WahaWebhookPusher.over_http(
                    http, f"{binds[0]}{PATH}", hmac_key="wrong", policy=RetryPolicy(attempts=1)
                ).deliver(message_event())
            stop.set()
        assert (first.statuses, again.statuses, forged.statuses) == ([200], [200], [401])
        assert len(await h.inbox()) == 1


# -- replay: freshness from the signed body, tombstones after erasure ------------------------
async def test_a_captured_delivery_replayed_with_a_fresh_header_is_stale(harness: Harness) -> None:
    old_event = message_event(timestamp_ms=int((time.time() - 3600) * 1000))
    body = WahaWebhookPusher.encode(old_event)
    status, answer = await harness.post(body, signed(body))  # the header says "now"
    assert (status, answer["reason"]) == (401, "timestamp_stale")
    assert await harness.inbox() == []


async def test_a_replay_after_forget_is_acknowledged_and_not_stored_again(
    harness: Harness,
) -> None:
    event = message_event(chat_id="221771234567@c.us", text="Mon secret")
    body = WahaWebhookPusher.encode(event)
    captured = signed(body)
    status, answer = await harness.post(body, captured)
    assert (status, answer["status"]) == (200, "accepted")
    await harness.store.resolve_user(Channel.WAHA, "waha:221771234567@c.us")  # as the actor does
    forgotten = await forget_user(harness.store, "waha:221771234567@c.us")
    assert forgotten.rows > 0
    harness.drain()
    for _ in range(2):  # replayed inside the window, with a fresh header each time
        status, answer = await harness.post(body, captured | signed(body))
        assert (status, answer["status"]) == (200, "erased")
    assert await harness.inbox() == []
    assert harness.drain() == []
    assert await harness.store.user_for_key("waha:221771234567@c.us") is None
