"""What a staff chat message asks, read from its text and the notice it replies to."""

from __future__ import annotations

import pytest

from concierge.domain import StaffAction, StaffCommand, parse_staff_command

R, CLOSE, HELP = StaffAction.REPLY, StaffAction.CLOSE, StaffAction.HELP


@pytest.mark.parametrize(
    ("text", "replying_to", "expected"),
    [
        ("/r 12 Bonjour Marie", None, StaffCommand(action=R, handoff_id=12, text="Bonjour Marie")),
        ("/reply #12 Bonjour", None, StaffCommand(action=R, handoff_id=12, text="Bonjour")),
        (
            "/repondre 3 deux\nlignes",
            None,
            StaffCommand(action=R, handoff_id=3, text="deux\nlignes"),
        ),
        ("/R@parish_bot 12 Oui", None, StaffCommand(action=R, handoff_id=12, text="Oui")),
        ("/r 12", None, StaffCommand(action=R, handoff_id=12, text="")),
        ("/r Bonjour", 7, StaffCommand(action=R, handoff_id=7, text="Bonjour")),
        ("/r 3 chaises", 7, StaffCommand(action=R, handoff_id=3, text="chaises")),
        ("/r Bonjour", None, StaffCommand(action=R, handoff_id=None, text="Bonjour")),
        ("Je vous rappelle", 7, StaffCommand(action=R, handoff_id=7, text="Je vous rappelle")),
        ("/close 12", None, StaffCommand(action=CLOSE, handoff_id=12)),
        ("/clore", 7, StaffCommand(action=CLOSE, handoff_id=7)),
        ("/aide", None, StaffCommand(action=HELP, handoff_id=None)),
    ],
)
def test_commands_and_replies_to_notices(
    text: str, replying_to: int | None, expected: StaffCommand
) -> None:
    assert parse_staff_command(text, replying_to=replying_to) == expected


@pytest.mark.parametrize(
    ("text", "replying_to"),
    [
        ("On se voit à 18h ?", None),
        ("   ", 7),
        ("/sondage demain", None),
        ("/r12 collé", None),
        ("/", None),
    ],
)
def test_anything_else_is_left_alone(text: str, replying_to: int | None) -> None:
    assert parse_staff_command(text, replying_to=replying_to) is None
