from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest

from concierge.domain import Languages, TriageRules, load_languages, load_triage
from concierge.domain.triage import TriageError, parse_rules
from concierge.protocol import ServiceType
from tests.domain.labelled_tsv import labelled_rows
from tests.shipped import CONFIG_DIR

LABELLED = Path(__file__).with_name("triage_labelled.tsv")
ACCURACY_FLOOR = 0.90
CLASS_FLOOR = 0.85
"""Overall and per class (recall): a rules change that loses more than a few messages fails."""


@attrs.frozen(kw_only=True)
class Labelled:
    part: str
    expected: ServiceType
    language: str
    text: str


def _labelled() -> list[Labelled]:
    """The labelled messages, each with its part (tuned on, or held out)."""
    return [
        Labelled(part=part, expected=ServiceType(expected), language=language, text=text)
        for part, (expected, language, text) in labelled_rows(LABELLED)
    ]


def test_labelled_set_has_enough_messages_in_each_language() -> None:
    rows = _labelled()
    assert len(rows) >= 150
    assert sum(1 for r in rows if r.language == "fr") >= 30
    assert sum(1 for r in rows if r.language == "en") >= 20
    assert sum(1 for r in rows if r.language == "wo") >= 12
    assert {r.expected for r in rows} == set(ServiceType)
    assert {r.part for r in rows} == {"original", "tune", "held"}


def _accuracy(
    rows: list[Labelled], rules: TriageRules
) -> tuple[float, list[tuple[Labelled, ServiceType]]]:
    got = [(r, rules.classify(r.text).service_type) for r in rows]
    misses = [(r, t) for r, t in got if t is not r.expected]
    return 1 - len(misses) / len(rows), misses


def test_triage_accuracy_on_the_labelled_set(
    triage_rules: TriageRules, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _labelled()
    accuracy, misses = _accuracy(rows, triage_rules)
    by_class = {
        t: _accuracy([r for r in rows if r.expected is t], triage_rules)[0] for t in ServiceType
    }
    with capsys.disabled():
        print(f"\ntriage accuracy: {accuracy:.1%} on {len(rows)} labelled messages")
        for t, share in by_class.items():
            n = sum(1 for r in rows if r.expected is t)
            print(f"  {t.value}: {share:.1%} of {n}")
        for part in ("original", "tune", "held"):
            kept = [r for r in rows if r.part == part]
            print(f"  part {part}: {_accuracy(kept, triage_rules)[0]:.1%} of {len(kept)}")
        for row, got in misses:
            print(f"  expected {row.expected.value}, got {got.value}: {row.text}")
    assert accuracy >= ACCURACY_FLOOR
    assert min(by_class.values()) >= CLASS_FLOOR


def test_language_accuracy_on_the_labelled_set(
    languages: Languages, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _labelled()
    right = sum(1 for r in rows if languages.detect(r.text) == r.language)
    wolof = [r for r in rows if r.language == "wo"]
    wolof_right = sum(1 for r in wolof if languages.detect(r.text) == "wo")
    with capsys.disabled():
        print(f"\nlanguage accuracy: {right / len(rows):.1%} on {len(rows)} labelled messages")
        print(f"  Wolof: {wolof_right} of {len(wolof)}")
    assert right / len(rows) >= ACCURACY_FLOOR
    assert wolof_right / len(wolof) >= ACCURACY_FLOOR


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Comment inscrire mon enfant au catéchisme ?", ServiceType.RENSEIGNEMENT),
        ("Quels sont les frais du caté ?", ServiceType.RENSEIGNEMENT),
        ("Qu'est-ce que le catéchisme nous apprend sur la grâce ?", ServiceType.CATECHESE),
        ("Je voudrais parler à un prêtre", ServiceType.CONTACT_HUMAIN),
        ("JE VOUDRAIS PARLER A UN PRETRE", ServiceType.CONTACT_HUMAIN),
        ("Rendez-vous avec un prêtre pour me confesser", ServiceType.CONTACT_HUMAIN),
        ("Quand sont les confessions ?", ServiceType.RENSEIGNEMENT),
    ],
)
def test_clear_cases(triage_rules: TriageRules, text: str, expected: ServiceType) -> None:
    result = triage_rules.classify(text)
    assert result.service_type is expected
    assert result.confident


def test_each_message_is_triaged_on_its_own(triage_rules: TriageRules) -> None:
    # After catechesis questions, a practical question with its own question word.
    result = triage_rules.classify("Qui est le curé ?", current=ServiceType.CATECHESE)
    assert result.service_type is ServiceType.RENSEIGNEMENT
    assert not result.follow_up
    result = triage_rules.classify("who is the parish priest?", current=ServiceType.CATECHESE)
    assert result.service_type is ServiceType.RENSEIGNEMENT


@pytest.mark.parametrize(
    "text",
    [
        "d'accord, et ensuite ?",
        "Et pour les adultes ?",
        "pour les petits aussi ?",
        "and for adults?",
        "what about the children?",
        "les adultes ?",
        "Waaye xale yi ?",
    ],
)
def test_a_follow_up_keeps_the_current_service(triage_rules: TriageRules, text: str) -> None:
    result = triage_rules.classify(text, current=ServiceType.CATECHESE)
    assert result.service_type is ServiceType.CATECHESE
    assert result.follow_up
    assert not result.confident
    assert triage_rules.classify(text).service_type is ServiceType.RENSEIGNEMENT


def test_a_follow_up_with_its_own_keywords_is_decided_by_them(triage_rules: TriageRules) -> None:
    result = triage_rules.classify("Et le samedi ?", current=ServiceType.CATECHESE)
    assert result.service_type is ServiceType.RENSEIGNEMENT
    assert result.confident


def test_ambiguous_message_never_reopens_a_handoff(triage_rules: TriageRules) -> None:
    result = triage_rules.classify("et ensuite", current=ServiceType.CONTACT_HUMAIN)
    assert result.service_type is ServiceType.RENSEIGNEMENT


def test_language_files_bring_their_keywords(languages: Languages) -> None:
    rules = parse_rules({}, languages=languages)
    assert rules.classify("Dama bëgg wax ak abbe bi").service_type is ServiceType.CONTACT_HUMAIN
    assert rules.classify("talk to a priest").service_type is ServiceType.CONTACT_HUMAIN
    assert rules.classify("Lan mooy Trinité bi ?").service_type is ServiceType.CATECHESE


def test_a_wrong_triage_table_in_a_language_file_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "languages"
    shutil.copytree(CONFIG_DIR / "languages", directory)
    (directory / "xx.toml").write_text(
        'fallback = "fr"\n[triage.OTHER]\nstrong = ["x"]\n', encoding="utf-8"
    )
    with pytest.raises(TriageError, match=r"language xx \[triage\]: unknown table \[OTHER\]"):
        parse_rules({}, languages=load_languages(directory))


def test_prefix_entries_match_word_endings() -> None:
    rules = parse_rules({"RENSEIGNEMENT": {"strong": ["inscri*"]}})
    assert rules.classify("les inscriptions").service_type is ServiceType.RENSEIGNEMENT
    assert rules.classify("les inscriptions").confident
    assert not rules.classify("rien").confident


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"default": "CONTACT_HUMAIN"}, "default cannot be CONTACT_HUMAIN"),
        ({"default": "NOPE"}, "default must be one of"),
        ({"OTHER": {}}, r"unknown table \[OTHER\]"),
        ({"CATECHESE": {"strong": "foi"}}, r"\[CATECHESE\]\.strong: expected a list"),
        ({"CATECHESE": {"weak": [""]}}, "non-empty string"),
        ({"CATECHESE": {"strong_weight": 0}}, "strong_weight: expected a whole number"),
    ],
)
def test_invalid_rules_are_refused_with_the_key_named(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(TriageError, match=message):
        parse_rules(data)


def test_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TriageError, match=r"triage\.toml: the triage rules file does not exist"):
        load_triage(tmp_path / "triage.toml", load_languages(CONFIG_DIR / "languages"))
