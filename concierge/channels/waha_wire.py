"""WAHA (WhatsApp HTTP API) webhook wire format: parse an envelope, normalise chat ids.

Pure functions, no I/O. ``parse_envelope`` turns a body that ``waha_signature`` has
verified into a ``ParsedMessage``, an ``Ignored`` or a ``Rejected``, and never raises.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs

from concierge.protocol import Channel, InboundKind, InboundMessage

__all__ = [
    "ChatId",
    "ChatKind",
    "IgnoreReason",
    "Ignored",
    "ParsedMessage",
    "RejectReason",
    "Rejected",
    "parse_chat_id",
    "parse_envelope",
    "shown",
    "user_key_for",
]

HEADER_REQUEST_ID = "x-webhook-request-id"
# How far ahead of our clock a delivery's timestamp may be (clock skew between hosts).
MAX_EXTERNAL_ID_CHARS = 256
MAX_DISPLAY_NAME_CHARS = 100


class RejectReason(enum.StrEnum):
    """Why a delivery is refused; nothing of it is stored."""

    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    ALGORITHM_INVALID = "algorithm_invalid"
    TIMESTAMP_MISSING = "timestamp_missing"
    TIMESTAMP_INVALID = "timestamp_invalid"
    TIMESTAMP_STALE = "timestamp_stale"
    TIMESTAMP_FUTURE = "timestamp_future"
    MALFORMED = "malformed"

    @property
    def http_status(self) -> int:
        """401 for anything about authenticity, 400 for a signed body we cannot read."""
        return 400 if self is RejectReason.MALFORMED else 401


class IgnoreReason(enum.StrEnum):
    """Why a valid delivery needs no answer (acknowledged with 200 so WAHA stops retrying)."""

    EVENT = "event"  # not a `message` event: message.any, message.ack, session.status, ...
    SESSION = "session"  # another WAHA session than ours
    FROM_ME = "from_me"  # our own message: answering it would loop
    API_SOURCE = "api_source"  # sent through the WAHA API (by us or another tool)
    GROUP = "group"  # a group chat while WAHA_ALLOW_GROUPS is off
    BROADCAST = "broadcast"  # status updates, broadcast lists, channels (newsletters)
    STAFF_CHATTER = "staff_chatter"  # the staff group talking among themselves: no command


@attrs.frozen(kw_only=True)
class Rejected:
    reason: RejectReason
    detail: str

    @property
    def http_status(self) -> int:
        return self.reason.http_status


@attrs.frozen(kw_only=True)
class Ignored:
    reason: IgnoreReason
    detail: str = ""


@attrs.frozen(kw_only=True)
class ParsedMessage:
    """A user's message ready for the inbox.

    ``alt_user_key`` is the same person's other identity when the payload reveals it
    (a phone number next to an ``@lid``, or the reverse); ``event_id`` is the
    envelope's ``evt_...`` id, for logs.
    """

    message: InboundMessage
    alt_user_key: str | None = None
    event_id: str | None = None


ParseResult = ParsedMessage | Ignored | Rejected


# -- chat ids -------------------------------------------------------------------------------
class ChatKind(enum.StrEnum):
    PHONE = "phone"  # 12132132130@c.us (@s.whatsapp.net is the same account)
    LID = "lid"  # hidden user id: 123456789012345@lid
    GROUP = "group"  # 120363000000000000@g.us
    BROADCAST = "broadcast"  # status@broadcast, broadcast lists, @newsletter channels


@attrs.frozen
class ChatId:
    value: str
    kind: ChatKind


_CHAT_ID = re.compile(
    r"^(?P<user>[0-9A-Za-z][0-9A-Za-z_.-]{0,63})(?::(?P<device>\d{1,5}))?@(?P<server>[A-Za-z.]{1,32})$"
)
_SERVERS = {
    "c.us": ChatKind.PHONE,
    "s.whatsapp.net": ChatKind.PHONE,
    "lid": ChatKind.LID,
    "g.us": ChatKind.GROUP,
    "broadcast": ChatKind.BROADCAST,
    "newsletter": ChatKind.BROADCAST,
}


def parse_chat_id(raw: str) -> ChatId:
    """Normalise a WhatsApp chat id: ``@s.whatsapp.net`` becomes ``@c.us``, device suffixes go.

    Raises ``ValueError`` naming what is wrong when ``raw`` is no WhatsApp chat id.
    """
    match = _CHAT_ID.match(raw.strip())
    if match is None:
        raise ValueError(f"{shown(raw)} is not a WhatsApp chat id (expected e.g. 33612345678@c.us)")
    user, device, server = match["user"], match["device"], match["server"].lower()
    kind = _SERVERS.get(server)
    if kind is None:
        raise ValueError(
            f"{shown(raw)} has an unknown server {server!r} (c.us, s.whatsapp.net, lid, g.us, ...)"
        )
    if kind in (ChatKind.PHONE, ChatKind.LID) and not user.isdigit():
        raise ValueError(f"{shown(raw)}: a user id before @{server} must be digits")
    if device is not None and kind not in (ChatKind.PHONE, ChatKind.LID):
        raise ValueError(f"{shown(raw)}: only user ids carry a :device suffix")
    if server == "s.whatsapp.net":
        server = "c.us"
    return ChatId(value=f"{user}@{server}", kind=kind)


def user_key_for(chat_id: str) -> str:
    """The channel-scoped user key of a normalised chat id: ``waha:33612345678@c.us``."""
    return f"{Channel.WAHA.value}:{chat_id}"


# -- parsing ----------------------------------------------------------------------------------
_COMMAND = re.compile(r"^/[A-Za-z][A-Za-z0-9_]*(?:\s|$)")
_EXTERNAL_ID = re.compile(r"^[\x21-\x7e]+$")


def parse_envelope(
    body: bytes,
    *,
    session: str,
    allow_groups: bool,
    received_at: datetime,
    correlation_id: str,
    staff_chat_id: str | None = None,
) -> ParseResult:
    """Read one webhook body; only a ``message`` event from a person yields a ``ParsedMessage``.

    A command in the staff group (``staff_chat_id``) is a ``STAFF`` message keyed by its
    sender, ``staff:waha:<participant>``. Never raises: unreadable input is a
    ``Rejected`` (``MALFORMED``) naming the field.
    """
    try:
        return _parse(
            body,
            session=session,
            allow_groups=allow_groups,
            received_at=received_at,
            correlation_id=correlation_id,
            staff_chat_id=staff_chat_id,
        )
    except _Malformed as exc:
        return _malformed(str(exc))


class _Malformed(Exception):
    """A field missing or of the wrong type; ``parse_envelope`` answers it with a ``Rejected``."""


_TYPE_NAMES: dict[type, str] = {str: "a string", bool: "a boolean", dict: "an object"}
T = TypeVar("T")


def _get(
    mapping: Mapping[str, Any],
    key: str,
    kind: type[T],
    default: T | None = None,
    *,
    within: str = "",
) -> T:
    """``mapping[key]`` (``default`` when absent), which must be a ``kind``; ``within`` names
    the object ``mapping`` is, for the error."""
    value = mapping.get(key, default)
    if not isinstance(value, kind):
        missing = "missing or " if default is None else ""
        raise _Malformed(f"`{within}{key}` is {missing}not {_TYPE_NAMES[kind]}")
    return value


def _parse(
    body: bytes,
    *,
    session: str,
    allow_groups: bool,
    received_at: datetime,
    correlation_id: str,
    staff_chat_id: str | None,
) -> ParseResult:
    envelope = _json_object(body)
    event = _get(envelope, "event", str)
    if event != "message":
        return Ignored(reason=IgnoreReason.EVENT, detail=event[:64])
    event_session = _get(envelope, "session", str, default=session)
    if event_session != session:
        return Ignored(reason=IgnoreReason.SESSION, detail=event_session[:64])
    payload: dict[str, Any] = _get(envelope, "payload", dict)
    if _get(payload, "fromMe", bool, default=False, within="payload."):
        return Ignored(reason=IgnoreReason.FROM_ME)
    if payload.get("source") == "api":
        return Ignored(reason=IgnoreReason.API_SOURCE)
    external_id = _external_id(payload)
    chat = _sender(payload)
    if chat.kind is ChatKind.BROADCAST:
        return Ignored(reason=IgnoreReason.BROADCAST)
    if staff_chat_id is not None and chat.value == staff_chat_id:
        return _staff_message(
            payload, chat, external_id, received_at=received_at, correlation_id=correlation_id
        )
    if chat.kind is ChatKind.GROUP and not allow_groups:
        return Ignored(reason=IgnoreReason.GROUP)
    text, kind = _text_and_kind(payload)
    data = payload.get("_data")
    data = data if isinstance(data, dict) else {}
    event_id = envelope.get("id")
    message = InboundMessage(
        correlation_id=correlation_id,
        channel=Channel.WAHA,
        user_key=user_key_for(chat.value),
        chat_id=chat.value,
        external_id=external_id,
        text=text,
        kind=kind,
        received_at=received_at,
        display_name=_display_name(data),
    )
    return ParsedMessage(
        message=message,
        alt_user_key=_alt_user_key(chat, data),
        event_id=event_id[:64] if isinstance(event_id, str) else None,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        raise _Malformed("the body is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise _Malformed("the body is not a JSON object")
    return envelope


def _external_id(payload: Mapping[str, Any]) -> str:
    """The platform's message id, the inbox's dedupe key: short printable ASCII."""
    external_id = payload.get("id")
    if (
        not isinstance(external_id, str)
        or not _EXTERNAL_ID.match(external_id)
        or len(external_id) > MAX_EXTERNAL_ID_CHARS
    ):
        raise _Malformed(
            f"`payload.id` must be 1 to {MAX_EXTERNAL_ID_CHARS} printable ASCII characters"
        )
    return external_id


def _sender(payload: Mapping[str, Any]) -> ChatId:
    sender = _get(payload, "from", str, within="payload.")
    try:
        return parse_chat_id(sender)
    except ValueError as exc:
        raise _Malformed(f"`payload.from`: {exc}") from None


def _text_and_kind(payload: Mapping[str, Any]) -> tuple[str, InboundKind]:
    """The cleaned text and what it is: a command, text, or media with no caption."""
    text = "" if payload.get("body") is None else _get(payload, "body", str, "", within="payload.")
    _get(payload, "hasMedia", bool, default=False, within="payload.")
    text = _clean(text)
    if not text.strip():
        return "", InboundKind.MEDIA  # media without caption, location, contact card, ...
    if _COMMAND.match(text.lstrip()):
        return text, InboundKind.COMMAND
    return text, InboundKind.TEXT


def _staff_message(
    payload: Mapping[str, Any],
    chat: ChatId,
    external_id: str,
    *,
    received_at: datetime,
    correlation_id: str,
) -> ParseResult:
    """A command in the staff group, from the participant who wrote it."""
    text = payload.get("body")
    if not isinstance(text, str) or not _COMMAND.match(_clean(text).lstrip()):
        return Ignored(reason=IgnoreReason.STAFF_CHATTER)
    participant = payload.get("participant")
    try:
        sender = parse_chat_id(participant if isinstance(participant, str) else chat.value)
    except ValueError as exc:
        raise _Malformed(f"`payload.participant`: {exc}") from None
    data = payload.get("_data")
    message = InboundMessage(
        correlation_id=correlation_id,
        channel=Channel.WAHA,
        user_key=f"staff:{user_key_for(sender.value)}",
        chat_id=chat.value,
        external_id=external_id,
        text=_clean(text).strip(),
        kind=InboundKind.STAFF,
        received_at=received_at,
        display_name=_display_name(data if isinstance(data, dict) else {}),
    )
    return ParsedMessage(message=message)


def _malformed(detail: str) -> Rejected:
    return Rejected(reason=RejectReason.MALFORMED, detail=detail)


def _clean(text: str) -> str:
    """Drop NUL (PostgreSQL refuses it in text) and lone surrogates (not encodable as UTF-8)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def shown(value: str) -> str:
    """A header or id value fit to quote in an error message: short and printable."""
    short = value[:40] + ("..." if len(value) > 40 else "")
    return repr(short.encode("ascii", "backslashreplace").decode("ascii"))


def _display_name(data: Mapping[str, Any]) -> str | None:
    """The sender's WhatsApp name: ``notifyName`` (WEBJS), ``pushName`` (NOWEB), ``Info.PushName`` (GOWS)."""
    info = data.get("Info")
    for value in (
        data.get("notifyName"),
        data.get("pushName"),
        info.get("PushName") if isinstance(info, dict) else None,
    ):
        if isinstance(value, str):
            name = " ".join(_clean(value).split())[:MAX_DISPLAY_NAME_CHARS]
            if name:
                return name
    return None


def _alt_user_key(chat: ChatId, data: Mapping[str, Any]) -> str | None:
    """The sender's other identity when the engine's raw data names it (LID <-> phone).

    NOWEB puts it in ``_data.key.remoteJidAlt`` / ``senderPn`` / ``senderLid``, GOWS in
    ``_data.Info.SenderAlt``; WEBJS carries none (ask ``GET /api/{session}/lids/{lid}``).
    """
    if chat.kind not in (ChatKind.PHONE, ChatKind.LID):
        return None
    wanted = ChatKind.PHONE if chat.kind is ChatKind.LID else ChatKind.LID
    key = data.get("key")
    info = data.get("Info")
    candidates: list[Any] = []
    if isinstance(key, dict):
        candidates += [key.get("remoteJidAlt"), key.get("senderPn"), key.get("senderLid")]
    if isinstance(info, dict):
        candidates.append(info.get("SenderAlt"))
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate:
            continue
        try:
            alt = parse_chat_id(candidate)
        except ValueError:
            continue
        if alt.kind is wanted:
            return user_key_for(alt.value)
    return None
