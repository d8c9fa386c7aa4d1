from __future__ import annotations

import pytest

from concierge.domain import Command, Reply, parse_command, reply_text
from concierge.domain.commands import is_reset
from concierge.domain.replies import TEXTS, bilingual


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


def test_every_reply_exists_in_french_and_english_and_fills_its_placeholders() -> None:
    for language in ("fr", "en"):
        assert set(TEXTS[language]) == set(Reply)
    assert "2000" in reply_text(Reply.TOO_LONG, "en", length=2500, limit=2000)
    assert "2 500" not in reply_text(Reply.TOO_LONG, "fr", length=2500, limit=2000)
    assert reply_text(Reply.HELP, "de") == reply_text(Reply.HELP, "fr")
    both = bilingual(Reply.HANDOFF_CLOSED)
    assert reply_text(Reply.HANDOFF_CLOSED, "fr") in both
    assert reply_text(Reply.HANDOFF_CLOSED, "en") in both
