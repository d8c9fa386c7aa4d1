"""Splitting long replies into readable parts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels.split import split_text
from concierge.channels.telegram_format import utf16_len


def test_short_text_is_one_part() -> None:
    assert split_text("  Bonjour !  ", limit=100) == ("Bonjour !",)


def test_blank_text_gives_no_parts() -> None:
    assert split_text(" \n\n ", limit=100) == ()


def test_paragraph_breaks_are_preferred() -> None:
    first = "Première phrase. Deuxième phrase."
    second = "Autre paragraphe. Encore une phrase ici."
    parts = split_text(f"{first}\n\n{second}", limit=60)
    assert parts == (first, second)


def test_sentence_ends_are_used_when_a_paragraph_is_too_long() -> None:
    text = "La messe est à dix heures. " * 4 + "Fin."
    parts = split_text(text, limit=60)
    assert all(len(p) <= 60 for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert " ".join(parts) == text.strip()


def test_words_are_not_cut_when_white_space_exists() -> None:
    text = " ".join(["catéchèse"] * 30)
    parts = split_text(text, limit=50)
    assert all(len(p) <= 50 for p in parts)
    assert all(set(p.split()) == {"catéchèse"} for p in parts)


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_text("x" * 25, limit=10) == ("x" * 10, "x" * 10, "x" * 5)


def test_an_early_paragraph_break_does_not_make_a_tiny_part() -> None:
    text = "Oui.\n\n" + "Une longue explication qui continue. " * 5
    parts = split_text(text, limit=100)
    assert len(parts[0]) > 30


def test_utf16_measure_counts_emoji_as_two_units() -> None:
    assert utf16_len("a🙏") == 3
    parts = split_text("🙏" * 10, limit=4, measure=utf16_len)
    assert parts == ("🙏🙏",) * 5


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", limit=0)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab .!?\n\né🙏"), max_size=400),
    st.integers(min_value=1, max_value=80),
)
def test_parts_fit_and_keep_every_non_space_character_in_order(text: str, limit: int) -> None:
    parts = split_text(text, limit=limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert "".join("".join(p.split()) for p in parts) == "".join(text.split())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=2, max_value=40))
def test_utf16_parts_fit_the_utf16_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit=limit, measure=utf16_len)
    assert all(utf16_len(p) <= limit for p in parts)
    assert "".join("".join(p.split()) for p in parts) == "".join(text.split())
