"""The WAHA wire format: signature and timestamp checks, envelope parsing, chat id normalisation."""

from __future__ import annotations

import hashlib
import hmac
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
    sign,
    user_key_for,
    verify_delivery,
)
from concierge.protocol import Channel, InboundKind
from tests.fakes.waha_api import WahaWebhookPusher, message_event

DOC_KEY = "my-secret-key"
DOC_BODY = b'{"event":"message","session":"default","engine":"WEBJS"}'
NOW_S = 1_800_000_000.0
RECEIVED = datetime.fromtimestamp(NOW_S, UTC)


def signed_headers(
    body: bytes, *, key: str = DOC_KEY, stamp_ms: int | None = None
) -> dict[str, str]:
    return {
        "X-Webhook-Hmac": hmac.new(key.encode(), body, hashlib.sha512).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha512",
        "X-Webhook-Timestamp": str(int(NOW_S * 1000) if stamp_ms is None else stamp_ms),
        "X-Webhook-Request-Id": "req-1",
    }


def verify(body: bytes, headers: dict[str, str], *, key: str | None = DOC_KEY) -> Rejected | None:
    return verify_delivery(body=body, headers=headers, hmac_key=key, now_s=NOW_S, window_s=600)


def parse(event: dict[str, Any] | bytes, **kwargs: Any) -> Any:
    body = event if isinstance(event, bytes) else WahaWebhookPusher.encode(event)
    options: dict[str, Any] = {"session": "default", "allow_groups": False}
    options.update(kwargs)
    return parse_envelope(body, received_at=RECEIVED, correlation_id="cid-1", **options)


# -- signature ---------------------------------------------------------------------------------
def test_documented_hmac_vector_is_reproduced() -> None:
    digest = sign(DOC_BODY, DOC_KEY)
    assert digest.startswith("208f8a55")
    assert digest.endswith("53fa89")


def test_documented_vector_is_accepted() -> None:
    assert verify(DOC_BODY, signed_headers(DOC_BODY)) is None


def test_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in signed_headers(DOC_BODY).items()}
    assert verify(DOC_BODY, headers) is None


@pytest.mark.parametrize("position", [0, 10, len(DOC_BODY) - 1])
def test_body_changed_by_one_byte_is_rejected(position: int) -> None:
    headers = signed_headers(DOC_BODY)
    tampered = bytearray(DOC_BODY)
    tampered[position] ^= 0x01
    result = verify(bytes(tampered), headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_body_reserialised_with_other_spacing_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    spaced = json.dumps(json.loads(DOC_BODY)).encode()  # ", " and ": " separators
    assert spaced != DOC_BODY
    result = verify(spaced, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


@pytest.mark.parametrize("algorithm", ["sha256", "SHA512", "sha-512", ""])
def test_algorithm_other_than_sha512_is_rejected(algorithm: str) -> None:
    headers = signed_headers(DOC_BODY) | {"X-Webhook-Hmac-Algorithm": algorithm}
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.ALGORITHM_INVALID


def test_missing_algorithm_header_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    del headers["X-Webhook-Hmac-Algorithm"]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.ALGORITHM_INVALID


def test_sha256_signature_with_sha256_header_is_rejected() -> None:
    headers = signed_headers(DOC_BODY) | {
        "X-Webhook-Hmac": hmac.new(DOC_KEY.encode(), DOC_BODY, hashlib.sha256).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha256",
    }
    assert verify(DOC_BODY, headers) is not None


def test_uppercased_hmac_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    headers["X-Webhook-Hmac"] = headers["X-Webhook-Hmac"].upper()
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


@pytest.mark.parametrize("keep", [1, 64, 127])
def test_truncated_hmac_is_rejected(keep: int) -> None:
    headers = signed_headers(DOC_BODY)
    headers["X-Webhook-Hmac"] = headers["X-Webhook-Hmac"][:keep]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_missing_hmac_is_rejected() -> None:
    headers = signed_headers(DOC_BODY)
    del headers["X-Webhook-Hmac"]
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_MISSING


def test_signature_with_another_key_is_rejected() -> None:
    result = verify(DOC_BODY, signed_headers(DOC_BODY, key="another-key"))
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


def test_non_ascii_hmac_header_is_rejected_without_error() -> None:
    headers = signed_headers(DOC_BODY) | {"X-Webhook-Hmac": "é" * 128}
    result = verify(DOC_BODY, headers)
    assert result is not None
    assert result.reason is RejectReason.SIGNATURE_INVALID


# -- timestamp: the event's own, inside the signed body ------------------------------------------
def stamped(stamp_ms: Any, *, payload_s: Any = None) -> bytes:
    """A signed-shaped message body whose envelope carries ``stamp_ms`` (omitted when None)."""
    event: dict[str, Any] = {"event": "message", "session": "default", "payload": {}}
    if stamp_ms is not None:
        event["timestamp"] = stamp_ms
    if payload_s is not None:
        event["payload"]["timestamp"] = payload_s
    return json.dumps(event).encode()


def verify_stamped(body: bytes, *, header_ms: int | None = None, key: str | None = DOC_KEY) -> Any:
    headers = signed_headers(body, stamp_ms=header_ms) if key else {}
    return verify(body, headers, key=key)


def test_an_event_beyond_the_window_is_rejected() -> None:
    result = verify_stamped(stamped(int((NOW_S - 601) * 1000)))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_a_fresh_header_does_not_revive_an_old_signed_event() -> None:
    """The header is not signed: a captured delivery re-sent with a new one stays stale."""
    old = stamped(int((NOW_S - 3600) * 1000))
    result = verify_stamped(old, header_ms=int(NOW_S * 1000))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_an_event_inside_the_window_is_accepted_whatever_the_header() -> None:
    assert verify_stamped(stamped(int((NOW_S - 599) * 1000)), header_ms=0) is None


def test_an_event_far_in_the_future_is_rejected() -> None:
    result = verify_stamped(stamped(int((NOW_S + 120) * 1000)))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_FUTURE


def test_small_clock_skew_ahead_is_accepted() -> None:
    assert verify_stamped(stamped(int((NOW_S + 30) * 1000))) is None


def test_older_builds_payload_timestamp_in_seconds_is_used() -> None:
    assert verify_stamped(stamped(None, payload_s=int(NOW_S) - 10)) is None
    result = verify_stamped(stamped(None, payload_s=int(NOW_S) - 3600))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


@pytest.mark.parametrize("stamp", ["1800000000000", -5, 0, True, 1.8e12, 10**17, [1]])
def test_unreadable_event_timestamp_is_rejected(stamp: Any) -> None:
    result = verify_stamped(stamped(stamp))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_INVALID


def test_signed_message_without_any_timestamp_is_rejected() -> None:
    result = verify_stamped(stamped(None), header_ms=int(NOW_S * 1000))
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_MISSING


def test_unsigned_mode_accepts_a_delivery_without_headers() -> None:
    assert verify(DOC_BODY, {}, key=None) is None
    assert verify_stamped(stamped(None), key=None) is None


def test_unsigned_mode_still_rejects_a_stale_event() -> None:
    result = verify_stamped(stamped(int((NOW_S - 3600) * 1000)), key=None)
    assert result is not None
    assert result.reason is RejectReason.TIMESTAMP_STALE


def test_rejections_map_to_401_except_malformed_bodies() -> None:
    assert {r: r.http_status for r in RejectReason} == {
        r: (400 if r is RejectReason.MALFORMED else 401) for r in RejectReason
    }


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


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["X-Webhook-Hmac", "X-Webhook-Hmac-Algorithm", "X-Webhook-Timestamp", "Other"]
        ),
        st.text(max_size=140),
    ),
    st.binary(max_size=64),
    st.sampled_from([DOC_KEY, None]),
)
def test_fuzz_headers_give_none_or_a_typed_rejection(
    headers: dict[str, str], body: bytes, key: str | None
) -> None:
    result = verify(body, headers, key=key)
    assert result is None or isinstance(result, Rejected)
    if key is not None:
        assert result is not None  # a random header set never carries the right signature
