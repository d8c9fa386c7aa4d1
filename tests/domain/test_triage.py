from __future__ import annotations

from pathlib import Path

import pytest

from concierge.domain import TriageRules, detect_language, load_triage
from concierge.domain.triage import TriageError, parse_rules
from concierge.protocol import ServiceType

LABELLED = Path(__file__).with_name("triage_labelled.tsv")
ACCURACY_FLOOR = 0.90


def _labelled() -> list[tuple[ServiceType, str, str]]:
    rows = []
    for line in LABELLED.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        expected, language, text = line.split("\t")
        rows.append((ServiceType(expected), language, text))
    return rows


def test_labelled_set_has_enough_french_and_english_messages() -> None:
    rows = _labelled()
    assert len(rows) >= 60
    assert sum(1 for _, lang, _ in rows if lang == "fr") >= 30
    assert sum(1 for _, lang, _ in rows if lang == "en") >= 20
    assert {t for t, _, _ in rows} == set(ServiceType)


def test_triage_accuracy_on_the_labelled_set(
    triage_rules: TriageRules, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _labelled()
    misses = [(t, text, triage_rules.classify(text).service_type) for t, _, text in rows]
    misses = [m for m in misses if m[0] is not m[2]]
    accuracy = 1 - len(misses) / len(rows)
    with capsys.disabled():
        print(f"\ntriage accuracy: {accuracy:.1%} on {len(rows)} labelled messages")
        for expected, text, got in misses:
            print(f"  expected {expected.value}, got {got.value}: {text}")
    assert accuracy >= ACCURACY_FLOOR


def test_language_accuracy_on_the_labelled_set(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _labelled()
    right = sum(1 for _, lang, text in rows if detect_language(text) == lang)
    with capsys.disabled():
        print(f"\nlanguage accuracy: {right / len(rows):.1%} on {len(rows)} labelled messages")
    assert right / len(rows) >= ACCURACY_FLOOR


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


def test_ambiguous_message_keeps_the_current_service(triage_rules: TriageRules) -> None:
    result = triage_rules.classify("d'accord, et ensuite ?", current=ServiceType.CATECHESE)
    assert result.service_type is ServiceType.CATECHESE
    assert not result.confident
    assert triage_rules.classify("d'accord").service_type is ServiceType.RENSEIGNEMENT


def test_ambiguous_message_never_reopens_a_handoff(triage_rules: TriageRules) -> None:
    result = triage_rules.classify("ok merci", current=ServiceType.CONTACT_HUMAIN)
    assert result.service_type is ServiceType.RENSEIGNEMENT


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
        load_triage(tmp_path / "triage.toml")
