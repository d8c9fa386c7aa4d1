"""Markdown → Telegram HTML: escaping, the supported subset, and balanced splitting at 4096 UTF-16 units."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from concierge.channels.telegram_format import (
    TELEGRAM_MAX_UNITS,
    format_reply,
    utf16_len,
)
from tests.fakes.telegram_api import parse_html


def one(text: str) -> str:
    parts = format_reply(text)
    assert len(parts) == 1
    return parts[0].html


def test_special_characters_are_escaped() -> None:
    assert one("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


def test_bold_italic_strike_code_and_links_become_html() -> None:
    assert one("**gras** et *italique* ~~barré~~") == "<b>gras</b> et <i>italique</i> <s>barré</s>"
    assert one("voir `x<y`") == "voir <code>x&lt;y</code>"
    assert one("[le site](https://paroisse.example/?a=1&b=2)") == (
        '<a href="https://paroisse.example/?a=1&amp;b=2">le site</a>'
    )


def test_unsafe_link_scheme_keeps_only_the_label() -> None:
    assert one("[clic](javascript:x)") == "clic"


def test_snake_case_and_products_stay_literal() -> None:
    assert one("la variable snake_case_name et 2*3*4") == "la variable snake_case_name et 2*3*4"


def test_unmatched_markers_stay_literal() -> None:
    assert one("un * seul et un ** double et `tick") == "un * seul et un ** double et `tick"


def test_headings_lists_quotes_and_fences() -> None:
    html = one("# Messes\n\n- dimanche 10h30\n- lundi\n\n> citation\n\n```\nx < 1\n```")
    assert html == (
        "<b>Messes</b>\n\n• dimanche 10h30\n• lundi\n\n<blockquote>citation</blockquote>\n\n"
        "<pre><code>x &lt; 1</code></pre>"
    )


def test_code_is_never_nested_inside_bold() -> None:
    html = one("**gras `code` gras**")
    assert html == "<b>gras </b><code>code</code><b> gras</b>"


def test_plain_fallback_has_no_markup() -> None:
    parts = format_reply("**Bonjour** & <bienvenue>")
    assert parts[0].plain == "Bonjour & <bienvenue>"


def test_blank_reply_has_no_parts() -> None:
    assert format_reply("  \n\n ") == []


def test_long_reply_is_split_at_paragraphs_first() -> None:
    paragraph = "Phrase numéro un. " * 100  # ~1800 characters
    text = "\n\n".join(f"{i} {paragraph}".strip() for i in range(6))
    parts = format_reply(text)
    assert len(parts) == 3
    for i, part in enumerate(parts):
        assert part.plain.startswith(f"{2 * i} ")
        assert utf16_len(part.html) <= TELEGRAM_MAX_UNITS


def test_paragraph_longer_than_a_message_is_split_at_sentences() -> None:
    sentence = "Ceci est une phrase assez longue pour compter. "
    parts = format_reply(sentence * 200)
    assert len(parts) >= 3
    for part in parts:
        assert part.plain.endswith("compter.")
        assert utf16_len(part.html) <= TELEGRAM_MAX_UNITS


def test_word_without_spaces_is_cut_by_code_points() -> None:
    parts = format_reply("x" * 9000)
    assert [utf16_len(p.html) for p in parts] == [4096, 4096, 808]


def test_astral_characters_count_twice_and_are_never_cut_in_half() -> None:
    parts = format_reply("🙏" * 3000)  # 6000 UTF-16 units
    assert [utf16_len(p.html) for p in parts] == [4096, 1904]
    assert "".join(p.plain for p in parts) == "🙏" * 3000


def test_ten_thousand_character_reply_arrives_as_ordered_balanced_parts() -> None:
    words = [f"mot{i}" for i in range(1700)]
    text = "**" + " ".join(words[:900]) + "** et _" + " ".join(words[900:]) + "_"
    assert len(text) > 10_000
    parts = format_reply(text)
    assert len(parts) >= 3
    seen = " ".join(p.plain for p in parts).split()
    assert [w for w in seen if w.startswith("mot")] == words
    for part in parts:
        assert utf16_len(part.html) <= TELEGRAM_MAX_UNITS
        visible, error = parse_html(part.html)
        assert error is None
        assert visible == part.plain
    assert parts[1].html.startswith("<b>")  # the bold run reopens in the next part


@pytest.mark.parametrize("limit", [64, 100, 500])
def test_small_limits_are_respected(limit: int) -> None:
    text = "**Un** _deux_ `trois` [quatre](https://x.example) " * 40
    for part in format_reply(text, limit=limit):
        assert utf16_len(part.html) <= limit


def test_limit_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be at least 64"):
        format_reply("x", limit=10)


markdownish = st.lists(
    st.sampled_from(
        [*"ab cé\n*_~`[]()<>&#->|.!🙏\\", "https://x.y", "**", "```", "\n\n", "- ", "> "]
    ),
    max_size=200,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=markdownish, limit=st.integers(min_value=64, max_value=600))
def test_any_input_gives_balanced_parts_within_the_limit(text: str, limit: int) -> None:
    parts = format_reply(text, limit=limit)
    for part in parts:
        assert utf16_len(part.html) <= limit
        visible, error = parse_html(part.html)
        assert error is None, part.html
        assert visible == part.plain
        assert part.plain.strip()
    # nothing visible is lost, only white space at the cuts
    squeeze = re.compile(r"\s+")
    joined = squeeze.sub("", "".join(p.plain for p in parts))
    whole = format_reply(text, limit=1_000_000)
    assert joined == squeeze.sub("", "".join(p.plain for p in whole))
