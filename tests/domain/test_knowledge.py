from __future__ import annotations

from pathlib import Path

import pytest

from concierge.domain import KnowledgeBase, excerpt, load_knowledge
from concierge.domain.knowledge import KnowledgeError, fold, split_sections, terms


def test_fold_removes_accents_and_case() -> None:
    assert fold("Catéchèse À L'ÉGLISE Œuvre") == "catechese a l'eglise oeuvre"


def test_terms_drop_french_and_english_stopwords_and_plurals() -> None:
    assert terms("À quelle heure sont les messes du dimanche ?") == ["heure", "messe", "dimanche"]
    assert terms("What are the times of the masses?") == ["time", "masse"]


def test_sections_follow_headings_and_skip_empty_parents() -> None:
    md = "# Paroisse\nIntro.\n\n## Sacrements\n\n### Mariage\nUn an avant.\n\n## Accès\nBus 7.\n"
    sections = split_sections("paroisse", md)
    assert [s.path for s in sections] == [
        ("Paroisse",),
        ("Paroisse", "Sacrements", "Mariage"),
        ("Paroisse", "Accès"),
    ]
    assert sections[1].body == "Un an avant."
    assert sections[1].ref == "paroisse › Sacrements › Mariage"


def test_sunday_mass_question_finds_the_mass_times_in_french_and_english(
    knowledge: KnowledgeBase,
) -> None:
    for question in ("A quelle heure est la messe dimanche ?", "What time is Mass on Sunday?"):
        best = knowledge.search(question)[0]
        assert best.section.title == "Horaires des messes", question
        assert "10h30" in best.section.body


def test_catechism_registration_finds_the_catechesis_section(knowledge: KnowledgeBase) -> None:
    best = knowledge.search("Combien coûte l'inscription au catéchisme ?")[0]
    assert best.section.title == "Catéchèse des enfants"


def test_accents_and_case_do_not_change_the_result(knowledge: KnowledgeBase) -> None:
    plain = knowledge.search("TRINITE")
    accented = knowledge.search("trinité")
    assert plain
    assert [h.section for h in plain] == [h.section for h in accented]


def test_stopwords_only_and_unrelated_questions_find_nothing(knowledge: KnowledgeBase) -> None:
    assert knowledge.search("est-ce que vous pouvez") == []
    assert knowledge.search("Qui a gagné le match de football ?", min_coverage=0.51) == []


def test_sources_restrict_the_search(knowledge: KnowledgeBase) -> None:
    hits = knowledge.search("confesser confession", sources={"foi-et-priere"})
    assert hits
    assert all(h.section.source == "foi-et-priere" for h in hits)


def test_long_sections_are_cut_to_the_matching_lines() -> None:
    body = (
        "\n".join(f"- ligne {i} sans rapport" for i in range(60)) + "\n- Dimanche : messe à 10h30."
    )
    section = split_sections("x", f"## Horaires\n{body}")[0]
    assert excerpt(section, ["dimanche"], max_chars=200) == "- Dimanche : messe à 10h30."


def test_missing_knowledge_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="knowledge"):
        load_knowledge(tmp_path)


def test_bad_synonym_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "knowledge").mkdir()
    (tmp_path / "knowledge" / "a.md").write_text("## A\nB\n", encoding="utf-8")
    (tmp_path / "synonyms.toml").write_text("[synonyms]\nmass = 'messe'\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"synonyms\.toml: synonyms\.mass"):
        load_knowledge(tmp_path)
