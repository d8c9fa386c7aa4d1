"""What a message in the staff chat asks: answer a handoff, close it, or show how.

``/r N text`` (``/reply``, ``/repondre``) answers handoff ``N``; ``/close N`` (``/clore``)
closes it. A message that replies to a notice about a handoff answers that handoff
with its whole text, and ``/close`` alone closes it. Anything else is staff talking
among themselves (or to another bot), which the desk leaves alone.
"""

from __future__ import annotations

import enum
import re

import attrs


class StaffAction(enum.StrEnum):
    REPLY = "reply"
    CLOSE = "close"
    HELP = "help"


_ACTIONS = {
    "r": StaffAction.REPLY,
    "reply": StaffAction.REPLY,
    "repondre": StaffAction.REPLY,
    "close": StaffAction.CLOSE,
    "clore": StaffAction.CLOSE,
    "help": StaffAction.HELP,
    "aide": StaffAction.HELP,
}

# "/r 12 text", "/r@parish_bot 12 text", "/close 12", "/close"
_COMMAND = re.compile(
    r"^/(?P<name>[A-Za-z]{1,16})(?:@[A-Za-z0-9_]{1,64})?"
    r"(?:\s+#?(?P<number>\d{1,18})(?![\w]))?(?:\s+(?P<text>.*))?$",
    re.DOTALL,
)


@attrs.frozen(kw_only=True)
class StaffCommand:
    """``handoff_id`` is ``None`` when the message names none and replies to no notice."""

    action: StaffAction
    handoff_id: int | None
    text: str = ""


def parse_staff_command(text: str, *, replying_to: int | None) -> StaffCommand | None:
    """The command in ``text`` (``replying_to``: the handoff of the notice it replies to)."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        if replying_to is None or not stripped:
            return None
        return StaffCommand(action=StaffAction.REPLY, handoff_id=replying_to, text=stripped)
    match = _COMMAND.match(stripped)
    if match is None:
        return None
    action = _ACTIONS.get(match["name"].lower())
    if action is None:
        return None
    number = match["number"]
    handoff_id = int(number) if number is not None else replying_to
    return StaffCommand(action=action, handoff_id=handoff_id, text=(match["text"] or "").strip())
