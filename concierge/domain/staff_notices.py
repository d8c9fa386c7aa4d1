"""What the staff chat is told: a handoff's notice, what its user writes meanwhile, its end.

The staff chat reads the default language. A message about a handoff carries the
handoff's id into the outbox, so that a staff member's reply to it (on Telegram) answers
that handoff; the notice quotes the conversation's last messages and says how to answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from concierge.domain.distress import DistressKind
from concierge.domain.language import Languages
from concierge.domain.replies import Reply
from concierge.protocol import Channel, HandoffRow, OutboundReply, Role, Turn
from concierge.settings import ConversationSettings

STAFF_EXCERPT_CHARS = 300
"""The longest a quoted message gets in the staff chat."""
STAFF_NOTICE_TURNS = 6
"""How many of the conversation's last messages a handoff notice quotes."""


@attrs.frozen(kw_only=True)
class StaffChat:
    """Where handoff notices go and staff answer from (``CONCIERGE_STAFF_CHANNEL``/``_CHAT_ID``)."""

    channel: Channel
    chat_id: str

    @staticmethod
    def of(settings: ConversationSettings) -> StaffChat | None:
        if settings.staff_channel is None or settings.staff_chat_id is None:
            return None
        return StaffChat(channel=settings.staff_channel, chat_id=settings.staff_chat_id)

    def message(
        self, text: str, *, correlation_id: str, handoff_id: int | None = None
    ) -> OutboundReply:
        """An outbox row to the staff chat; ``handoff_id`` makes a reply to it answer that handoff."""
        return OutboundReply(
            correlation_id=correlation_id,
            channel=self.channel,
            user_key=f"{self.channel.value}:{self.chat_id}",
            chat_id=self.chat_id,
            text=text,
            handoff_id=handoff_id,
        )


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= STAFF_EXCERPT_CHARS else text[: STAFF_EXCERPT_CHARS - 1] + "…"


def staff_notice(
    *,
    settings: ConversationSettings,
    languages: Languages,
    handoff: HandoffRow,
    channel: Channel,
    who: str,
    recent: Sequence[Turn],
    distress: Sequence[DistressKind] = (),
) -> OutboundReply | None:
    """The handoff's notice (``None`` without a staff chat): its number, the user's channel
    and name, the last messages (``recent``, oldest first) and how to answer.

    An urgent handoff gets ``staff_urgent``, which names the ``distress`` found.
    """
    staff = StaffChat.of(settings)
    if staff is None:
        return None
    lines = [
        f"› {who if turn.role is Role.USER else 'Assistant'} : {_short(turn.text)}"
        for turn in recent[-STAFF_NOTICE_TURNS:]
    ]
    common = {
        "handoff_id": handoff.handoff_id,
        "who": who,
        "channel": channel.value,
        "excerpt": "\n".join(lines),
    }
    if handoff.urgent:
        kind = languages.distress_label(distress or (DistressKind.JUDGED,))
        text = languages.reply(Reply.STAFF_URGENT, languages.default, kind=kind, **common)
    else:
        text = languages.reply(
            Reply.STAFF_HANDOFF, languages.default, reason=handoff.reason, **common
        )
    return staff.message(text, correlation_id=handoff.correlation_id, handoff_id=handoff.handoff_id)


def staff_forward(
    *,
    settings: ConversationSettings,
    languages: Languages,
    handoff: HandoffRow,
    who: str,
    text: str,
    correlation_id: str,
) -> OutboundReply | None:
    """A user's message during their handoff, for the staff chat (``None`` without one)."""
    staff = StaffChat.of(settings)
    if staff is None:
        return None
    forwarded = languages.reply(
        Reply.STAFF_FORWARD,
        languages.default,
        handoff_id=handoff.handoff_id,
        who=who,
        text=_short(text),
    )
    return staff.message(forwarded, correlation_id=correlation_id, handoff_id=handoff.handoff_id)


def staff_closed(
    staff: StaffChat, languages: Languages, handoff: HandoffRow, *, by: str
) -> OutboundReply:
    """The staff chat told that ``by`` closed the handoff."""
    text = languages.reply(
        Reply.STAFF_CLOSED, languages.default, handoff_id=handoff.handoff_id, by=by
    )
    return staff.message(text, correlation_id=handoff.correlation_id)
