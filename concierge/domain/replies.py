"""The fixed texts the concierge sends itself: their names and the placeholders they may use.

The texts are data, one table per language file (``languages/<code>.toml``,
``[texts]``, ``[offline]`` and ``[prompt]``); this module says which must exist and
what each may fill in, so a file with a missing text or a misspelt placeholder is
refused at start rather than failing a user's turn.
"""

from __future__ import annotations

import enum
from types import MappingProxyType


class Reply(enum.StrEnum):
    WELCOME = "welcome"
    HELP = "help"
    RESET_DONE = "reset_done"
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"
    TOO_LONG = "too_long"
    MEDIA_UNSUPPORTED = "media_unsupported"
    HANDOFF_OPENED = "handoff_opened"
    HANDOFF_CLOSED = "handoff_closed"
    HANDOFF_TIMEOUT = "handoff_timeout"
    PROVIDER_FAILED = "provider_failed"
    STAFF_REPLY = "staff_reply"
    # To the staff chat (in the default language, the staff's):
    STAFF_HANDOFF = "staff_handoff"
    STAFF_FORWARD = "staff_forward"
    STAFF_CLOSED = "staff_closed"
    STAFF_HELP = "staff_help"
    STAFF_NO_HANDOFF = "staff_no_handoff"
    STAFF_NOT_ACTIVE = "staff_not_active"
    STAFF_NO_TEXT = "staff_no_text"
    GREETING = "greeting"
    WELLBEING = "wellbeing"
    THANKS = "thanks"
    FAREWELL = "farewell"
    IDENTITY = "identity"
    ACKNOWLEDGEMENT = "acknowledgement"
    BUDGET_EXHAUSTED = "budget_exhausted"
    DISTRESS = "distress"
    """To a person in distress: a person is told now, and the community's numbers."""
    DISTRESS_NUMBER = "distress_number"
    """One line of the numbers in ``DISTRESS``."""
    STAFF_URGENT = "staff_urgent"
    LINK_CODE = "link_code"
    """A one-time code to link another channel's account, shown to this identity only."""
    LINK_DONE = "link_done"
    LINK_WRONG = "link_wrong"
    LINK_REFUSED = "link_refused"
    LINK_ALREADY = "link_already"
    LINK_BUSY = "link_busy"
    """A conversation of one side did not end its turn in time: nothing was linked."""
    UNLINK_DONE = "unlink_done"
    UNLINK_NONE = "unlink_none"


class OfflineText(enum.StrEnum):
    """The frame of an answer quoted from the knowledge base."""

    SOURCE = "source"
    OUTRO = "outro"
    NOT_FOUND = "not_found"
    HUMAN = "human"


class PromptText(enum.StrEnum):
    """What the code adds to a provider's instructions (``ANSWER_IN`` only where needed)."""

    FRAME = "frame"
    NO_KNOWLEDGE = "no_knowledge"
    ANSWER_IN = "answer_in"
    URGENT = "urgent"
    """How a provider says it judges a message an emergency (the marker to write)."""


PLACEHOLDERS: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        Reply.TOO_LONG: frozenset({"length", "limit"}),
        Reply.STAFF_REPLY: frozenset({"text"}),
        Reply.STAFF_HANDOFF: frozenset({"handoff_id", "reason", "who", "channel", "excerpt"}),
        Reply.STAFF_FORWARD: frozenset({"handoff_id", "who", "text"}),
        Reply.STAFF_CLOSED: frozenset({"handoff_id", "by"}),
        Reply.STAFF_NO_HANDOFF: frozenset({"handoff_id"}),
        Reply.STAFF_NOT_ACTIVE: frozenset({"handoff_id"}),
        Reply.STAFF_NO_TEXT: frozenset({"handoff_id"}),
        Reply.STAFF_URGENT: frozenset({"handoff_id", "kind", "who", "channel", "excerpt"}),
        Reply.DISTRESS: frozenset({"numbers", "priest"}),
        Reply.DISTRESS_NUMBER: frozenset({"label", "number"}),
        Reply.LINK_CODE: frozenset({"code", "minutes"}),
        Reply.LINK_DONE: frozenset({"channel"}),
        Reply.UNLINK_DONE: frozenset({"channel"}),
        OfflineText.SOURCE: frozenset({"ref"}),
        PromptText.URGENT: frozenset({"marker"}),
    }
)
"""What each text may fill in; a text not listed takes no placeholder."""

REQUIRED: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        Reply.DISTRESS: frozenset({"numbers", "priest"}),
        Reply.DISTRESS_NUMBER: frozenset({"number"}),
        Reply.LINK_CODE: frozenset({"code"}),
        PromptText.URGENT: frozenset({"marker"}),
    }
)
"""What a text must fill in: without it the numbers or the marker would be lost."""

OPTIONAL: frozenset[str] = frozenset({PromptText.ANSWER_IN})
"""Texts a language may leave out without a fallback."""
