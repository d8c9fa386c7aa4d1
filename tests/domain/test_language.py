from __future__ import annotations

import pytest

from concierge.domain import detect_language
from concierge.domain.language import normalise_hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A quelle heure est la messe dimanche ?", "fr"),
        ("What time is Mass on Sunday?", "en"),
        ("Catéchisme", "fr"),
        ("I don't know", "en"),
        ("Je n'ai pas compris", "fr"),
        ("hello", "en"),
        ("bonjour", "fr"),
    ],
)
def test_detects_french_and_english(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_french_is_the_default_for_unclear_text() -> None:
    assert detect_language("ok") == "fr"
    assert detect_language("/start") == "fr"


def test_unclear_text_keeps_the_previous_language_then_the_hint() -> None:
    assert detect_language("ok", previous="en") == "en"
    assert detect_language("ok", hint="en-GB") == "en"
    assert detect_language("ok", hint="de") == "fr"


def test_hint_normalisation() -> None:
    assert normalise_hint("fr_FR") == "fr"
    assert normalise_hint("EN") == "en"
    assert normalise_hint("wo") is None
    assert normalise_hint(None) is None
