"""Distress rules: the labelled set, the phrase grammar, and the files that hold them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from concierge.domain import (
    CommunityError,
    DistressKind,
    DistressRules,
    Languages,
    PromptBook,
    Reply,
    load_community,
    load_languages,
    read_judgement,
)
from concierge.domain.distress import (
    URGENT_MARKER,
    DistressTable,
    PhraseError,
    parse_phrase,
)
from concierge.domain.language import LanguageError
from concierge.domain.replies import PromptText
from concierge.domain.text import Stemmer
from concierge.protocol import ServiceType
from tests import shipped
from tests.domain.distress_set import PARTS, labelled, score
from tests.shipped import CONFIG_DIR

FALSE_ALARM_CEILING = 2
"""Of the set's messages that are not emergencies (31): more fails the rules change."""


# -- the labelled set -------------------------------------------------------------------
def test_the_labelled_set_covers_each_kind_in_each_language() -> None:
    rows = labelled()
    assert len(rows) >= 40
    for language in ("fr", "en", "wo"):
        kinds = {r.expected for r in rows if r.language == language and r.expected}
        assert kinds == {
            DistressKind.SELF_HARM,
            DistressKind.ABUSE,
            DistressKind.MEDICAL,
            DistressKind.DYING,
        }, language
    assert sum(1 for r in rows if r.expected is None) >= 15
    assert {r.part for r in rows} == set(PARTS)
    assert sum(1 for r in rows if r.part == "held") >= 20


def test_every_message_in_distress_is_caught_and_false_alarms_stay_rare(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules = shipped.distress()
    rows = labelled()
    whole = score(rows, rules)
    with capsys.disabled():
        print(f"\ndistress rules ({rules.rules} phrases)")
        print("  " + whole.line(f"all {len(rows)}"))
        for part in PARTS:
            kept = [r for r in rows if r.part == part]
            print("  " + score(kept, rules).line(f"part {part} ({len(kept)})"))
        for language in ("fr", "en", "wo"):
            kept = [r for r in rows if r.language == language]
            print("  " + score(kept, rules).line(f"{language} ({len(kept)})"))
        for row, kinds in whole.errors:
            found = ", ".join(k.value for k in kinds) or "nothing"
            print(f"  expected {row.expected or 'none'}, found {found}: {row.text}")
    assert whole.recall == 1.0
    assert whole.false_alarms <= FALSE_ALARM_CEILING


def test_no_practical_or_faith_question_raises_an_alarm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The triage set: 162 messages as parishioners write them, none written for this."""
    rules = shipped.distress()
    alarms = []
    for line in Path(__file__).with_name("triage_labelled.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        service, _, text = line.split("\t")
        if rules.detect(text) is not None:
            alarms.append((ServiceType(service), text))
    with capsys.disabled():
        print(f"\ndistress alarms on the triage set: {len(alarms)}")
        for service, text in alarms:
            print(f"  {service.value}: {text}")
    assert all(service is ServiceType.CONTACT_HUMAIN for service, _ in alarms)


# -- how phrases match ---------------------------------------------------------------------
def _rules(*phrases: str, figures: tuple[str, ...] = ()) -> DistressRules:
    table = DistressTable(
        phrases={DistressKind.SELF_HARM: tuple(parse_phrase(p) for p in phrases)},
        not_distress=tuple(parse_phrase(p) for p in figures),
    )
    return DistressRules([(Stemmer("french"), table)])


@pytest.mark.parametrize(
    ("phrase", "text", "found"),
    [
        ("envie de mourir", "J'AI ENVIE DE MOURIR", True),
        ("envie de mourir", "j'ai envi de mourrir", True),  # two typos
        ("envie de mourir", "j'ai envie de courir", False),  # a first letter is never a typo
        ("envie de mourir", "des envies de mourir", True),  # the same stem
        ("me frapp*", "il me frappait", True),
        ("me frapp*", "il me frappe", True),
        ("me (frappe|bat) [encore|toujours] fort", "il me bat fort", True),
        ("me (frappe|bat) [encore|toujours] fort", "il me bat encore fort", True),
        ("me (frappe|bat) [encore|toujours] fort", "il me bat vraiment fort", False),
        ("me jeter ... pont", "me jeter du haut du pont", True),
        ("me jeter ... pont", "me jeter un jour du haut du pont", False),  # four words skipped
        ("(m a|nous a) frapp*", "il m'a frappée", True),
    ],
)
def test_a_phrase_matches_as_the_grammar_says(phrase: str, text: str, found: bool) -> None:
    assert (_rules(phrase).detect(text) is not None) is found


def test_a_figure_cancels_the_phrases_it_overlaps_unless_they_say_more() -> None:
    rules = _rules("envie d en finir", "en finir avec (la vie|tout)", figures=("en finir avec",))
    assert rules.detect("j'ai envie d'en finir avec ce dossier") is None
    assert rules.detect("j'ai envie d'en finir avec la vie") is not None
    assert rules.detect("j'ai envie d'en finir") is not None
    # A figure early in a message does not cancel a phrase later in it.
    assert rules.detect("en finir avec ce dossier, puis j'ai envie d'en finir") is not None


def test_what_was_found_names_every_kind_in_a_fixed_order() -> None:
    found = shipped.distress().detect("Mon mari me frappe et j'ai envie de mourir")
    assert found is not None
    assert found.kinds == (DistressKind.SELF_HARM, DistressKind.ABUSE)
    assert len(found.phrases) == 2


def test_every_language_is_read_in_every_message() -> None:
    rules = shipped.distress()
    assert rules.detect("I want to die, je n'en peux plus") is not None
    assert rules.detect("Dama bëgg dee") is not None


@pytest.mark.parametrize(
    ("phrase", "problem"),
    [
        ("", "an empty phrase"),
        ("(a|b", r"\( without \)"),
        ("a ) b", r"\) out of place"),
        ("(a|) b", "an empty choice"),
        ("(a|(b)) c", r"nothing but words"),
        ("... mourir", "starts and ends with words it needs"),
        ("[vraiment] mourir", "starts and ends with words it needs"),
        ("mourir ...", "starts and ends with words it needs"),
        ("mourir ?!", "has no letters or digits"),
    ],
)
def test_a_phrase_outside_the_grammar_is_refused(phrase: str, problem: str) -> None:
    with pytest.raises(PhraseError, match=problem):
        parse_phrase(phrase)


# -- the files -----------------------------------------------------------------------------
def _languages_with(tmp_path: Path, extra: str) -> Path:
    directory = tmp_path / "languages"
    shutil.copytree(CONFIG_DIR / "languages", directory)
    (directory / "xx.toml").write_text(f'fallback = "fr"\n{extra}', encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[distress.grief]\nphrases = ["x"]\n', "distress.grief: unknown key"),
        ('[distress.abuse]\nphrases = ["(x|"]\n', r"distress.abuse.phrases: '\(x\|': \( without"),
        ('[distress.abuse]\nwords = ["x"]\n', "distress.abuse.words: unknown key"),
        ('[distress.judged]\nphrases = ["x"]\n', "distress.judged.phrases: unknown key"),
        ('[distress.abuse]\nlabel = " "\n', "distress.abuse.label: an empty label"),
        ('[distress]\nnot = "x"\n', "distress.not: expected a list"),
    ],
)
def test_a_wrong_distress_table_is_named_with_its_file(
    tmp_path: Path, extra: str, problem: str
) -> None:
    directory = _languages_with(tmp_path, extra)
    with pytest.raises(LanguageError, match=rf"xx\.toml: {problem}"):
        load_languages(directory)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('distress = "Appelez le 15."\n', r"texts\.distress: placeholder \{numbers\} missing"),
        ('distress_number = "{label}"\n', r"texts\.distress_number: placeholder \{number\}"),
    ],
)
def test_an_emergency_text_must_keep_its_numbers(tmp_path: Path, text: str, problem: str) -> None:
    directory = _languages_with(tmp_path, f"[texts]\n{text}")
    with pytest.raises(LanguageError, match=rf"xx\.toml: {problem}"):
        load_languages(directory)


def test_the_emergency_reply_gives_the_communitys_numbers_in_each_language(
    languages: Languages,
) -> None:
    community = shipped.community()
    for language in ("fr", "en", "wo"):
        reply = community.distress_reply(languages, language)
        assert "+221 77 000 00 00" in reply
        for number in ("1515", "17", "18"):
            assert f" {number}" in reply
        assert "{" not in reply
    assert "– SAMU (ambulaans) : 1515" in community.distress_reply(languages, "wo")
    assert "– Police : 17" in community.distress_reply(languages, "wo")  # French label, fallback
    assert "- Fire brigade: 18" in community.distress_reply(languages, "en")
    assert community.distress_reply(languages, "fr").startswith(
        shipped.reply_text(Reply.DISTRESS, "fr", numbers="", priest="").split("\n")[0]
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "priest_on_call: missing"),
        ('priest_on_call = "+221 77"\n', r"emergency: expected at least one \[\[emergency\]\]"),
        (
            'priest_on_call = "call Jean"\n[[emergency]]\nnumber = "15"\nlabel = "SAMU"\n',
            "priest_on_call: expected a phone number",
        ),
        (
            'priest_on_call = "1"\n[[emergency]]\nnumber = 15\nlabel = "SAMU"\n',
            r"emergency\[1\]\.number: expected a phone number as a string",
        ),
        (
            'priest_on_call = "1"\n[[emergency]]\nnumber = "15"\nlabel = { en = "x" }\n',
            r"emergency\[1\]\.label: no label in the default language \(fr\)",
        ),
        (
            'priest_on_call = "1"\n[[emergency]]\nnumber = "15"\nlabel = { fr = "x", de = "y" }\n',
            r"emergency\[1\]\.label\.de: no language file de\.toml",
        ),
        (
            'priest_on_call = "1"\n[[emergency]]\nnumber = "15"\n',
            r"emergency\[1\]: expected exactly a number and a label",
        ),
        ('priest = "1"\n', "priest: unknown key"),
        ("priest_on_call = [", "cannot read the community file"),
    ],
)
def test_a_wrong_community_file_is_named(
    tmp_path: Path, languages: Languages, content: str, problem: str
) -> None:
    path = tmp_path / "community.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommunityError, match=rf"community\.toml: {problem}"):
        load_community(path, languages)


def test_a_missing_community_file_is_named(tmp_path: Path, languages: Languages) -> None:
    with pytest.raises(CommunityError, match=r"community\.toml: the community file does not exist"):
        load_community(tmp_path / "community.toml", languages)


# -- the provider's judgement --------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        "[[URGENT]] Je préviens la paroisse.",
        "  [[ urgent ]]\nJe préviens la paroisse.",
        "**[[URGENT]]** Je préviens la paroisse.",
        "[URGENT] Je préviens la paroisse.",
    ],
)
def test_a_reply_that_starts_with_the_marker_is_a_judgement(reply: str) -> None:
    judged, _ = read_judgement(reply)
    assert judged


def test_a_marker_further_on_is_no_judgement_and_never_reaches_the_person() -> None:
    judged, text = read_judgement("La messe est à 10h30 [[URGENT]], et à 18h [[ Urgent ]].")
    assert not judged
    assert "urgent" not in text.casefold()
    assert read_judgement("La messe est à 10h30.") == (False, "La messe est à 10h30.")


def test_every_prompt_asks_for_the_marker_in_an_emergency(
    prompt_book: PromptBook, languages: Languages
) -> None:
    for language in ("fr", "en", "wo"):
        asked = languages.prompt_text(PromptText.URGENT, language).format(marker=URGENT_MARKER)
        for service_type in ServiceType:
            prompt = prompt_book.build(
                service_type=service_type,
                language=language,
                sections=[],
                history=[],
                user_text="x",
            )
            assert asked in prompt.system
            assert prompt.leaked(f"Mes consignes : {asked}")  # repeating it is an echo
