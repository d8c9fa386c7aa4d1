"""The WAHA wire format: envelope parsing and chat id normalisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels.waha_wire import (
    ChatKind,
    Ignored,
    IgnoreReason,
    ParsedMessage,
    Rejected,
    RejectReason,
    parse_chat_id,
    parse_envelope,
    user_key_for,
)
from concierge.protocol import Channel, InboundKind
from tests.fakes.waha_api import WahaWebhookPusher, message_event

DOC_KEY = "my-secret-key"
DOC_BODY = b'{"event":"message","session":"default","engine":"WEBJS"}'
NOW_S = 1_800_000_000.0
RECEIVED = datetime.fromtimestamp(NOW_S, UTC)


def parse(event: dict[str, Any] | bytes, **kwargs: Any) -> Any:
    body = event if isinstance(event, bytes) else WahaWebhookPusher.encode(event)
    options: dict[str, Any] = {"session": "default", "allow_groups": False}
    options.update(kwargs)
    return parse_envelope(body, received_at=RECEIVED, correlation_id="cid-1", **options)


# -- chat ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normalised", "kind"),
    [
        ("33612345678@c.us", "33612345678@c.us", ChatKind.PHONE),
        ("33612345678@s.whatsapp.net", "33612345678@c.us", ChatKind.PHONE),
        ("33612345678:12@s.whatsapp.net", "33612345678@c.us", ChatKind.PHONE),
        ("33612345678@S.WhatsApp.Net", "33612345678@c.us", ChatKind.PHONE),
        (" 33612345678@c.us ", "33612345678@c.us", ChatKind.PHONE),
        ("4639135154355@lid", "4639135154355@lid", ChatKind.LID),
        ("4639135154355:3@lid", "4639135154355@lid", ChatKind.LID),
        ("120363041234567890@g.us", "120363041234567890@g.us", ChatKind.GROUP),
        ("33612345678-1400000000@g.us", "33612345678-1400000000@g.us", ChatKind.GROUP),
        ("status@broadcast", "status@broadcast", ChatKind.BROADCAST),
        ("120363000000000000@newsletter", "120363000000000000@newsletter", ChatKind.BROADCAST),
    ],
)
def test_chat_ids_are_normalised(raw: str, normalised: str, kind: ChatKind) -> None:
    chat = parse_chat_id(raw)
    assert (chat.value, chat.kind) == (normalised, kind)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "33612345678",
        "@c.us",
        "abc@c.us",
        "336@example.com",
        "33 6@c.us",
        "1@g.us:2",
        "x:1@g.us",
    ],
)
def test_invalid_chat_ids_are_refused_with_the_value_named(raw: str) -> None:
    with pytest.raises(ValueError, match=r"chat id|server|digits|device"):
        parse_chat_id(raw)


def test_user_key_is_channel_scoped() -> None:
    assert user_key_for("33612345678@c.us") == "waha:33612345678@c.us"


# -- envelopes ---------------------------------------------------------------------------------
def test_a_text_message_becomes_a_new_inbound() -> None:
    event = message_event(
        chat_id="33612345678@c.us", text="Bonjour", message_id="false_33612345678@c.us_AAA1"
    )
    result = parse(event)
    assert isinstance(result, ParsedMessage)
    message = result.message
    assert message.channel is Channel.WAHA
    assert message.user_key == "waha:33612345678@c.us"
    assert message.chat_id == "33612345678@c.us"
    assert message.external_id == "false_33612345678@c.us_AAA1"
    assert message.text == "Bonjour"
    assert message.kind is InboundKind.TEXT
    assert message.received_at == RECEIVED
    assert message.correlation_id == "cid-1"
    assert result.event_id == event["id"]


def test_s_whatsapp_net_sender_is_normalised_to_c_us() -> None:
    result = parse(message_event(chat_id="33612345678@s.whatsapp.net"))
    assert isinstance(result, ParsedMessage)
    assert result.message.chat_id == "33612345678@c.us"
    assert result.message.user_key == "waha:33612345678@c.us"


@pytest.mark.parametrize(
    "event", ["message.any", "message.ack", "session.status", "message.reaction"]
)
def test_events_other_than_message_are_ignored(event: str) -> None:
    result = parse(message_event(event=event))
    assert result == Ignored(reason=IgnoreReason.EVENT, detail=event)


def test_own_messages_are_ignored() -> None:
    assert parse(message_event(from_me=True)) == Ignored(reason=IgnoreReason.FROM_ME)


def test_messages_sent_through_the_api_are_ignored() -> None:
    assert parse(message_event(source="api")) == Ignored(reason=IgnoreReason.API_SOURCE)


def test_other_sessions_are_ignored() -> None:
    result = parse(message_event(session="other"))
    assert isinstance(result, Ignored)
    assert result.reason is IgnoreReason.SESSION


def test_groups_are_ignored_unless_allowed() -> None:
    event = message_event(chat_id="120363041234567890@g.us", participant="33612345678@c.us")
    assert parse(event) == Ignored(reason=IgnoreReason.GROUP)
    allowed = parse(event, allow_groups=True)
    assert isinstance(allowed, ParsedMessage)
    assert allowed.message.chat_id == "120363041234567890@g.us"


@pytest.mark.parametrize("chat", ["status@broadcast", "120363000000000000@newsletter"])
def test_status_updates_and_channels_are_ignored(chat: str) -> None:
    assert parse(message_event(chat_id=chat)) == Ignored(reason=IgnoreReason.BROADCAST)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_media_without_text_is_a_media_message(text: str | None) -> None:
    result = parse(message_event(text=text, has_media=True))
    assert isinstance(result, ParsedMessage)
    assert result.message.kind is InboundKind.MEDIA
    assert result.message.text == ""


def test_media_with_a_caption_is_a_text_message() -> None:
    result = parse(message_event(text="Voici l'affiche", has_media=True))
    assert isinstance(result, ParsedMessage)
    assert (result.message.kind, result.message.text) == (InboundKind.TEXT, "Voici l'affiche")


def test_a_slash_word_is_a_command() -> None:
    result = parse(message_event(text="/start"))
    assert isinstance(result, ParsedMessage)
    assert result.message.kind is InboundKind.COMMAND
    plain = parse(message_event(text="1/2 de la paroisse"))
    assert isinstance(plain, ParsedMessage)
    assert plain.message.kind is InboundKind.TEXT


def test_nul_characters_and_lone_surrogates_are_dropped_from_text() -> None:
    body = WahaWebhookPusher.encode(message_event(text="a\x00b")).replace(
        b"a\\u0000b", b"a\\u0000b\\ud800"
    )
    result = parse(body)
    assert isinstance(result, ParsedMessage)
    assert "\x00" not in result.message.text
    result.message.text.encode("utf-8")  # encodable


def test_display_name_comes_from_the_engine_data() -> None:
    webjs = parse(message_event(data={"notifyName": "  Marie   Dupont "}))
    noweb = parse(message_event(data={"pushName": "Jean"}))
    gows = parse(message_event(data={"Info": {"PushName": "Luc"}}))
    names = [r.message.display_name for r in (webjs, noweb, gows) if isinstance(r, ParsedMessage)]
    assert names == ["Marie Dupont", "Jean", "Luc"]


def test_lid_sender_keeps_the_lid_as_user_key_and_reveals_the_phone_from_noweb_data() -> None:
    data = {"key": {"remoteJid": "4639135154355@lid", "remoteJidAlt": "33612345678@s.whatsapp.net"}}
    result = parse(message_event(chat_id="4639135154355@lid", data=data, engine="NOWEB"))
    assert isinstance(result, ParsedMessage)
    assert result.message.user_key == "waha:4639135154355@lid"
    assert result.message.chat_id == "4639135154355@lid"
    assert result.alt_user_key == "waha:33612345678@c.us"


def test_phone_sender_reveals_its_lid_from_gows_data() -> None:
    data = {"Info": {"Sender": "33612345678@s.whatsapp.net", "SenderAlt": "4639135154355@lid"}}
    result = parse(message_event(chat_id="33612345678@c.us", data=data, engine="GOWS"))
    assert isinstance(result, ParsedMessage)
    assert result.alt_user_key == "waha:4639135154355@lid"


def test_alt_identity_of_the_same_kind_or_garbage_is_not_used() -> None:
    data = {"key": {"remoteJidAlt": "4639135154355@lid", "senderPn": 42}}
    result = parse(message_event(chat_id="4639135154355@lid", data=data))
    assert isinstance(result, ParsedMessage)
    assert result.alt_user_key is None


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"session": "default"}', "`event`"),
        (b'{"event": "message"}', "`payload`"),
        (b'{"event": "message", "payload": {"from": "33612345678@c.us"}}', "`payload.id`"),
        (b'{"event": "message", "payload": {"id": "x", "from": 5}}', "`payload.from`"),
        (b'{"event": "message", "payload": {"id": "x", "from": "nobody"}}', "`payload.from`"),
        (
            b'{"event": "message", "payload": {"id": "x", "from": "1@c.us", "fromMe": "no"}}',
            "`payload.fromMe`",
        ),
        (
            b'{"event": "message", "payload": {"id": "x", "from": "1@c.us", "body": 3}}',
            "`payload.body`",
        ),
        (b'{"event": "message", "payload": {"id": "a b", "from": "1@c.us"}}', "`payload.id`"),
        (b"[" * 100_000 + b"]" * 100_000, "valid JSON"),
    ],
)
def test_malformed_envelopes_are_rejected_naming_the_field(body: bytes, named: str) -> None:
    result = parse(body)
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.MALFORMED
    assert result.http_status == 400
    assert named in result.detail


# -- fuzzing -----------------------------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_chat_ids = st.sampled_from(
    ["33612345678@c.us", "1@s.whatsapp.net", "5@lid", "1@g.us", "status@broadcast", "x", "", "1@x"]
) | st.text(max_size=20)
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=40) | _json_values,
        "from": _chat_ids | _json_values,
        "fromMe": st.booleans() | _json_values,
        "source": st.sampled_from(["app", "api"]) | _json_values,
        "body": st.text(max_size=50) | _json_values,
        "hasMedia": st.booleans() | _json_values,
        "_data": _json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "key": st.dictionaries(
                    st.sampled_from(["remoteJidAlt", "senderPn", "senderLid"]),
                    _chat_ids | _json_values,
                ),
                "Info": st.dictionaries(
                    st.sampled_from(["SenderAlt", "PushName"]), _chat_ids | _json_values
                ),
                "pushName": _json_values,
                "notifyName": _json_values,
            },
        ),
    },
)
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["message", "message.any"]) | _json_values,
        "session": st.sampled_from(["default", "other"]) | _json_values,
        "payload": _payloads | _json_values,
        "id": _json_values,
    },
)

_data = st.fixed_dictionaries(
    {},
    optional={
        "key": st.dictionaries(
            st.sampled_from(["remoteJidAlt", "senderPn", "senderLid"]), _chat_ids | _json_values
        ),
        "Info": st.dictionaries(
            st.sampled_from(["SenderAlt", "PushName"]), _chat_ids | _json_values
        ),
        "pushName": st.text(max_size=150) | _json_values,
        "notifyName": st.text(max_size=150) | _json_values,
    },
)
# Messages that are mostly valid: the parser's accepting paths get fuzzed too.
_messages = st.builds(
    lambda chat, text, mid, data, media: message_event(
        chat_id=chat, text=text, message_id=mid, data=data, has_media=media
    ),
    chat=st.sampled_from(
        [
            "33612345678@c.us",
            "33612345678@s.whatsapp.net",
            "4639135154355@lid",
            "120363041234567890@g.us",
            "33612345678:7@s.whatsapp.net",
        ]
    ),
    text=st.none()
    | st.text(max_size=300)
    | st.text(st.sampled_from(["a", " ", "\x00", "\ud800", "é", "🙏", "/"])),
    mid=st.none()
    | st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300
    ),
    data=_data,
    media=st.booleans(),
)


def _check_result(result: object) -> None:
    assert isinstance(result, ParsedMessage | Ignored | Rejected)
    if isinstance(result, ParsedMessage):
        message = result.message
        assert message.user_key == f"waha:{message.chat_id}"
        assert parse_chat_id(message.chat_id).value == message.chat_id
        message.text.encode("utf-8")
        assert "\x00" not in message.text
    if isinstance(result, Rejected):
        assert result.reason is RejectReason.MALFORMED


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_only_typed_results(body: bytes) -> None:
    _check_result(parse(body))


@settings(max_examples=600, deadline=None)
@given(_envelopes, st.booleans())
def test_fuzz_envelope_shaped_input_gives_only_typed_results(
    envelope: dict[str, Any], groups: bool
) -> None:
    body = json.dumps(envelope, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _check_result(parse(body, allow_groups=groups))


@settings(max_examples=400, deadline=None)
@given(_messages, st.booleans())
def test_fuzz_near_valid_messages_give_only_typed_results(
    envelope: dict[str, Any], groups: bool
) -> None:
    result = parse(WahaWebhookPusher.encode(envelope), allow_groups=groups)
    _check_result(result)
    if isinstance(result, ParsedMessage):
        assert result.message.external_id == envelope["payload"]["id"]
