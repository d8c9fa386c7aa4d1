"""Fuzz the Update parser: any JSON-ish input gives a result or ``MalformedUpdate``, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels.telegram import Ignored, MalformedUpdate, parse_update, parse_update_body
from concierge.store.base import NewInbound

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=20)
    | st.text(alphabet=st.sampled_from(["\x00", "\ud800", "\udfff", "a", "é", "🙏"]), max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)

# Updates that look nearly right, so the fuzzer reaches the deep branches.
keys = st.sampled_from(["message", "edited_message", "callback_query", "channel_post", "x"])
chat = st.fixed_dictionaries(
    {"id": scalars, "type": st.sampled_from(["private", "group", "supergroup", "channel"]) | scalars},
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
    assert isinstance(result, NewInbound | Ignored)
    if isinstance(result, NewInbound):
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
    assert isinstance(result, NewInbound | Ignored)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(MalformedUpdate, match="not valid JSON"):
        parse_update_body(body)
