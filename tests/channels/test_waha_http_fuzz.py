"""Fuzzing ``POST /webhooks/waha`` with signed arbitrary bodies: never a 5xx, a row only for a message."""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings, strategies as st
from quart_trio import QuartTrio

from concierge.channels import waha_blueprint
from concierge.channels.waha_wire import ParsedMessage, parse_envelope
from concierge.domain import Ingest
from concierge.protocol import Inbound
from concierge.settings import WahaSettings
from tests.channels.test_waha_wire import _envelopes, _messages
from tests.fakes.waha_api import WahaWebhookPusher
from tests.stores import sqlite_store

KEY = "fuzz-key"
SETTINGS = WahaSettings(
    url="http://127.0.0.1:3000",
    api_key=None,
    session="default",
    hmac_key=KEY,
    allow_unsigned=False,
    timestamp_window_s=600,
    allow_groups=True,
)


async def _post_all(bodies: list[bytes]) -> list[tuple[int, int, bool, str]]:
    """(status, inbox rows after, parser said message, reason) for each body, on a fresh store."""
    results: list[tuple[int, int, bool, str]] = []
    with tempfile.TemporaryDirectory() as data_dir:
        async with sqlite_store(Path(data_dir)) as store:
            send, receive = trio.open_memory_channel[Inbound](1000)
            with send, receive:
                app = QuartTrio(__name__)
                app.register_blueprint(
                    waha_blueprint(
                        ingest=Ingest(store=store, router=send), settings=SETTINGS, store=store
                    )
                )
                client = app.test_client()
                for body in bodies:
                    headers = {
                        "x-webhook-hmac": hmac.new(KEY.encode(), body, hashlib.sha512).hexdigest(),
                        "x-webhook-hmac-algorithm": "sha512",
                        "x-webhook-timestamp": str(int(time.time() * 1000)),
                    }
                    response = await client.post("/webhooks/waha", data=body, headers=headers)
                    parsed = parse_envelope(
                        body,
                        session="default",
                        allow_groups=True,
                        received_at=_epoch(),
                        correlation_id="x",
                    )
                    rows = len(await store.pending_inbox())
                    reason = (await response.get_json() or {}).get("reason", "")
                    results.append(
                        (response.status_code, rows, isinstance(parsed, ParsedMessage), reason)
                    )
    return results


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


_bodies = st.one_of(
    st.binary(max_size=200),
    _envelopes.map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    _messages.map(WahaWebhookPusher.encode),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_bodies, min_size=1, max_size=6))
def test_fuzz_signed_bodies_never_get_a_5xx_and_only_messages_make_rows(
    bodies: list[bytes],
) -> None:
    results = trio.run(_post_all, bodies)
    previous_rows = 0
    for status, rows, is_message, reason in results:
        assert status in (200, 400, 401), status
        if status == 401:  # only an event whose signed body has no usable time of its own
            assert reason.startswith("timestamp_"), reason
            assert rows == previous_rows
        elif is_message:
            assert status == 200
            assert rows - previous_rows in (0, 1)  # 0: a duplicate of an earlier example
        else:
            assert rows == previous_rows
        previous_rows = rows
