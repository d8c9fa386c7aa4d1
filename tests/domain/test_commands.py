from __future__ import annotations

import pytest

from concierge.domain import Command, parse_command
from concierge.domain.commands import is_reset


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/start", Command.START),
        ("/help", Command.HELP),
        ("/aide", Command.HELP),
        ("/reset", Command.RESET),
        ("/humain", Command.HUMAN),
        ("/human", Command.HUMAN),
        ("/HUMAIN", Command.HUMAN),
        ("/start@ParoisseBot", Command.START),
        ("/humain s'il vous plaît", Command.HUMAN),
        ("/nimportequoi", Command.UNKNOWN),
        ("/", Command.UNKNOWN),
    ],
)
def test_commands_are_recognised(text: str, command: Command) -> None:
    parsed = parse_command(text)
    assert parsed is not None
    assert parsed.command is command


def test_ordinary_text_is_not_a_command() -> None:
    assert parse_command("Bonjour / bonsoir") is None
    assert is_reset("/reset")
    assert not is_reset("reset")
