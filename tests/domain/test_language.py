from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from concierge.domain import Languages, Reply, load_languages
from concierge.domain.language import LanguageError
from concierge.domain.replies import OfflineText, PromptText
from tests.shipped import CONFIG_DIR


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
        ("Salaam aleekum", "wo"),
        ("Na nga def ?", "wo"),
        ("Jërëjëf", "wo"),
        ("Ban waxtu la misa bi dibéer ?", "wo"),
        ("Dama bëgg wax ak abbe bi", "wo"),
    ],
)
def test_detects_french_english_and_wolof(languages: Languages, text: str, expected: str) -> None:
    assert languages.detect(text) == expected


def test_the_default_language_is_french_for_unclear_text(languages: Languages) -> None:
    assert languages.default == "fr"
    assert languages.detect("ok") == "fr"
    assert languages.detect("/start") == "fr"


def test_unclear_text_keeps_the_previous_language_then_the_hint(languages: Languages) -> None:
    assert languages.detect("ok", previous="en") == "en"
    assert languages.detect("ok", previous="wo") == "wo"
    assert languages.detect("ok", hint="en-GB") == "en"
    assert languages.detect("ok", hint="de") == "fr"


def test_hint_normalisation(languages: Languages) -> None:
    assert languages.normalise_hint("fr_FR") == "fr"
    assert languages.normalise_hint("EN") == "en"
    assert languages.normalise_hint("wo-SN") == "wo"
    assert languages.normalise_hint("de") is None
    assert languages.normalise_hint(None) is None


def test_every_text_exists_in_every_language_and_fills_its_placeholders(
    languages: Languages,
) -> None:
    for pack in languages.packs:
        assert set(pack.texts) == set(Reply), pack.code
        assert set(pack.offline) == set(OfflineText), pack.code
    assert "2000" in languages.reply(Reply.TOO_LONG, "en", length=2500, limit=2000)
    assert "2500" in languages.reply(Reply.TOO_LONG, "wo", length=2500, limit=2000)
    assert languages.reply(Reply.HELP, "de") == languages.reply(Reply.HELP, "fr")


def test_wolof_answers_the_fixed_texts_in_wolof(languages: Languages) -> None:
    for reply in (
        Reply.WELCOME,
        Reply.HELP,
        Reply.HANDOFF_OPENED,
        Reply.RATE_LIMITED,
        Reply.TOO_LONG,
        Reply.BUDGET_EXHAUSTED,
        Reply.GREETING,
    ):
        assert languages.reply(reply, "wo") != languages.reply(reply, "fr"), reply
    # What staff read stays in the default language.
    assert languages.reply(Reply.STAFF_HANDOFF, "wo") == languages.reply(Reply.STAFF_HANDOFF, "fr")


def test_wolof_borrows_the_french_prompts_and_asks_for_an_answer_in_wolof(
    languages: Languages,
) -> None:
    assert languages.pack("wo").prompts == "fr"
    assert "wolof" in languages.prompt_text(PromptText.ANSWER_IN, "wo")
    assert languages.prompt_text(PromptText.ANSWER_IN, "fr") == ""
    assert languages.prompt_text(PromptText.FRAME, "wo") == languages.prompt_text(
        PromptText.FRAME, "fr"
    )


def _copy_languages(tmp_path: Path) -> Path:
    directory = tmp_path / "languages"
    shutil.copytree(CONFIG_DIR / "languages", directory)
    return directory


def test_adding_a_language_is_adding_a_file(tmp_path: Path) -> None:
    directory = _copy_languages(tmp_path)
    (directory / "pt.toml").write_text(
        'name = "português"\nstemmer = "portuguese"\nfallback = "en"\nprompts = "en"\n'
        '[detect]\nwords = "obrigado ola missa domingo quando"\n'
        '[small_talk]\nthanks = ["obrigado", "obrigada"]\n'
        '[texts]\nthanks = "De nada! Mais alguma pergunta?"\n',
        encoding="utf-8",
    )
    languages = load_languages(directory)
    assert languages.detect("obrigado") == "pt"
    assert languages.small_talk.classify("obrigada") is not None
    assert languages.reply(Reply.THANKS, "pt") == "De nada! Mais alguma pergunta?"
    assert languages.reply(Reply.HELP, "pt") == languages.reply(Reply.HELP, "en")
    assert languages.analyzer().is_stopword("the")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('name = "x"\ncolour = "red"\n', r"xx\.toml: colour: unknown key"),
        ('stemmer = "klingon"\n', r"xx\.toml: stemmer: unknown stemmer 'klingon'"),
        ('default = "yes"\n', r"xx\.toml: default: expected true or false"),
        (
            'fallback = "fr"\n[texts]\nhelp = "{nope}"\n',
            r"texts\.help: unknown placeholder \{nope\}",
        ),
        ('fallback = "fr"\n[texts]\nhelpp = "x"\n', r"\[texts\] helpp: unknown text"),
        ('fallback = "fr"\n[texts]\ntoo_long = "{length"\n', r"texts\.too_long: .*literal brace"),
        ('fallback = "zz"\n', r"fallback: no language file zz\.toml"),
        ('[texts]\nhelp = "x"\n', r"\[texts\] misses .*welcome"),
        ('fallback = "fr"\n[small_talk]\nweather = ["x"]\n', r"small_talk\.weather: unknown kind"),
        (
            'fallback = "fr"\n[detect]\npatterns = ["("]\n',
            r"detect\.patterns: '\(' is not a regular",
        ),
        ('fallback = "fr"\n[detect]\nwords = ["a"]\n', r"detect\.words: expected a string"),
        ('fallback = "fr"\ndefault = true\n', "exactly one language file must say default = true"),
    ],
)
def test_a_wrong_language_file_is_refused_with_the_key_named(
    tmp_path: Path, content: str, message: str
) -> None:
    directory = _copy_languages(tmp_path)
    (directory / "xx.toml").write_text(content, encoding="utf-8")
    with pytest.raises(LanguageError, match=message):
        load_languages(directory)


def test_missing_languages_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(LanguageError, match="languages directory does not exist"):
        load_languages(tmp_path / "languages")
