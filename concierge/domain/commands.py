"""Slash commands a user can type: ``/start``, ``/help``, ``/reset``, ``/humain`` (``/human``),
``/lier`` (``/link``) and ``/delier`` (``/unlink``)."""

from __future__ import annotations

import enum
import re

import attrs


class Command(enum.StrEnum):
    START = "start"
    HELP = "help"
    RESET = "reset"
    HUMAN = "human"
    LINK = "link"
    UNLINK = "unlink"
    UNKNOWN = "unknown"


_ALIASES = {
    "start": Command.START,
    "help": Command.HELP,
    "aide": Command.HELP,
    "reset": Command.RESET,
    "recommencer": Command.RESET,
    "humain": Command.HUMAN,
    "human": Command.HUMAN,
    "lier": Command.LINK,
    "link": Command.LINK,
    "delier": Command.UNLINK,
    "unlink": Command.UNLINK,
}

# "/cmd", "/cmd@SomeBot", "/cmd arguments"
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s+(.*))?$", re.DOTALL)


@attrs.frozen(kw_only=True)
class ParsedCommand:
    command: Command
    name: str
    argument: str = ""


def parse_command(text: str) -> ParsedCommand | None:
    """The command ``text`` carries, or ``None`` when it is an ordinary message.

    Anything starting with ``/`` is a command; an unknown name is ``Command.UNKNOWN``
    (answered with the help text).
    """
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    match = _COMMAND.match(stripped)
    if match is None:
        return ParsedCommand(command=Command.UNKNOWN, name=stripped[1:33])
    name = match.group(1).lower()
    return ParsedCommand(
        command=_ALIASES.get(name, Command.UNKNOWN),
        name=name,
        argument=(match.group(2) or "").strip(),
    )


def is_reset(text: str) -> bool:
    """Whether a recorded user message was ``/reset`` (rebuilding context stops there)."""
    parsed = parse_command(text)
    return parsed is not None and parsed.command is Command.RESET
