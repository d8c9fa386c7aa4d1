"""Fuzz the Update parser: any JSON-ish input gives a result or ``MalformedUpdate``, nothing else."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels import Ignored, MalformedUpdate, parse_update
from concierge.channels.telegram_http import TelegramWebhook
from concierge.channels.telegram_wire import parse_update_body
from concierge.protocol import InboundMessage
from tests.channels.telegram_support import wired_ingest
from tests.fakes.telegram_api import FakeTelegram
from tests.stores import sqlite_store

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.text(alphabet=st.sampled_from(["\x00", "\ud800", "\udfff", "a", "é", "🙏"]), max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

# Updates that look nearly right, so the fuzzer reaches the deep branches.
keys = st.sampled_from(["message", "edited_message", "callback_query", "channel_post", "x"])
chat = st.fixed_dictionaries(
    {
        "id": scalars,
        "type": st.sampled_from(["private", "group", "supergroup", "channel"]) | scalars,
    },
)
sender = st.fixed_dictionaries(
    {"id": scalars}, optional={"is_bot": scalars, "first_name": scalars, "language_code": scalars}
)
message = st.fixed_dictionaries(
    {"chat": chat | json_values},
    optional={
        "from": sender | json_values,
        "text": scalars,
        "caption": scalars,
        "photo": json_values,
        "sticker": json_values,
        "voice": json_values,
    },
)
near_updates = st.builds(
    lambda update_id, key, body: {"update_id": update_id, key: body},
    scalars,
    keys,
    message | json_values,
)


def check(value: Any) -> None:
    try:
        result = parse_update(value)
    except MalformedUpdate:
        return
    assert isinstance(result, InboundMessage | Ignored)
    if isinstance(result, InboundMessage):
        assert result.user_key.startswith("telegram:")
        assert result.text
        for field in (result.text, result.display_name or "", result.language_hint or ""):
            assert "\x00" not in field
            field.encode("utf-8")  # storable: no lone surrogates


@settings(max_examples=1500, deadline=None)
@given(value=json_values)
def test_arbitrary_json_gives_a_result_or_malformed_update(value: Any) -> None:
    check(value)


@settings(max_examples=1500, deadline=None)
@given(value=near_updates)
def test_near_miss_updates_give_a_result_or_malformed_update(value: Any) -> None:
    check(value)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=200) | near_updates.map(lambda u: json.dumps(u).encode()))
def test_arbitrary_bodies_give_a_result_or_malformed_update(body: bytes) -> None:
    try:
        result = parse_update_body(body)
    except MalformedUpdate:
        return
    assert isinstance(result, InboundMessage | Ignored)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(MalformedUpdate, match="not valid JSON"):
        parse_update_body(body)


_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    "",
    "\x00",
    "\ud800",
    "é🙏",
    "/start@bot x",
    [],
    {},
    [1, "a"],
    {"id": 5},
]


def _replace_somewhere(rng: random.Random, node: Any) -> Any:
    """A copy of ``node`` with one value somewhere inside replaced, removed or added."""
    if isinstance(node, dict) and node and rng.random() < 0.9:
        nested = [k for k, v in node.items() if isinstance(v, dict)]
        key = rng.choice(nested) if nested and rng.random() < 0.6 else rng.choice(list(node))
        copy = dict(node)
        roll = rng.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.5:
            copy[key] = rng.choice(_ODD_VALUES)
        elif roll < 0.6:
            copy[
                rng.choice(["photo", "sticker", "caption", "is_bot", "voice", "edited_message"])
            ] = rng.choice(_ODD_VALUES)
        else:
            copy[key] = _replace_somewhere(rng, node[key])
        return copy
    return rng.choice(_ODD_VALUES)


def _mutations(rng: random.Random, base: bytes, count: int) -> list[bytes]:
    """Structural edits of a valid update (still JSON), and byte flips, truncations and splices."""
    bodies = []
    decoded = json.loads(base)
    for n in range(count):
        if n % 2 == 0:
            mutated = {**decoded, "update_id": 1000 + n}  # distinct updates reach the store
            for _ in range(rng.randint(1, 2)):
                mutated = _replace_somewhere(rng, mutated)
            bodies.append(json.dumps(mutated).encode())
            continue
        body = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            match rng.randrange(4):
                case 0 if body:
                    body[rng.randrange(len(body))] = rng.randrange(256)
                case 1:
                    del body[rng.randrange(len(body) + 1) :]
                case 2:
                    at = rng.randrange(len(body) + 1)
                    body[at:at] = rng.choice(
                        [b"\\u0000", b"\\ud800", b'"', b"{", b"]", b"null", b"-1e999"]
                    )
                case _:
                    at = rng.randrange(len(body) + 1)
                    body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        bodies.append(bytes(body))
    return bodies


@pytest.mark.anyio
async def test_webhook_answers_mangled_signed_bodies_with_200_or_400_only(tmp_path: Path) -> None:
    rng = random.Random(2024)
    base = json.dumps(FakeTelegram().text_message(user_id=77, text="Bonjour é 🙏")).encode()
    async with sqlite_store(tmp_path) as store, wired_ingest(store) as wired:
        webhook = TelegramWebhook(ingest=wired.ingest, secret="s")
        for body in _mutations(rng, base, 400):

            async def read(body: bytes = body) -> bytes:
                return body

            answer = await webhook.handle("s", read)
            assert answer.status in (200, 400), (answer, body)
        assert webhook.stats.failed == 0
        rows = await store.pending_inbox()
        assert len(rows) == webhook.stats.accepted > 10
        for row in rows:
            assert "\x00" not in row.text
            row.text.encode("utf-8")
