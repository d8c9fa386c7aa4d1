"""The labelled retrieval set (``retrieval_labelled.tsv``) and how an answer is scored on it.

Shared by ``test_retrieval.py`` (floors in CI) and ``bench/bench_retrieval.py``
(the figures, with latency). Retrieval is judged twice: where the expected section
ranks among the sections of the best passages (hit@1, hit@3), and whether the
offline answer, the one a user gets with no provider, contains the fact.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

from concierge.domain import KnowledgeBase, Languages, TriageRules
from concierge.domain.text import fold
from concierge.protocol import ServiceType
from concierge.providers import OfflineAdapter

LABELLED = Path(__file__).with_name("retrieval_labelled.tsv")


@attrs.frozen(kw_only=True)
class Question:
    split: str
    language: str
    sections: frozenset[str]
    facts: tuple[str, ...]
    text: str


@attrs.frozen(kw_only=True)
class Outcome:
    question: Question
    ranked: tuple[str, ...]
    """The sections of the best passages, best first, without repeats."""
    answer: str
    fact_found: bool
    handed_off: bool
    """Triage sends the question to a person (the knowledge answer is scored all the same)."""

    @property
    def hit1(self) -> bool:
        return bool(self.ranked) and self.ranked[0] in self.question.sections

    @property
    def hit3(self) -> bool:
        return bool(self.question.sections & set(self.ranked[:3]))


@attrs.frozen(kw_only=True)
class Score:
    count: int
    hit1: float
    hit3: float
    fact: float
    handed_off: int

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.count} questions, hit@1 {self.hit1:.1%}, hit@3 {self.hit3:.1%}, "
            f"fact in answer {self.fact:.1%} ({self.handed_off} sent to a person by triage)"
        )


def load_questions(path: Path = LABELLED) -> list[Question]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 5 tab-separated fields, got {len(fields)}")
        split, language, sections, facts, text = fields
        questions.append(
            Question(
                split=split,
                language=language,
                sections=frozenset(s.strip() for s in sections.split(" | ")),
                facts=tuple(f.strip() for f in facts.split(" | ")),
                text=text,
            )
        )
    return questions


def evaluate(
    question: Question,
    *,
    knowledge: KnowledgeBase,
    languages: Languages,
    triage: TriageRules,
    offline: OfflineAdapter,
) -> Outcome:
    """Rank the question's sections and answer it as the offline concierge would.

    A question triage sends to a person (a funeral, an illness) is answered as
    practical information, so that retrieval is judged on every question.
    """
    ranked = tuple(s.ref for s in knowledge.best_sections(question.text, limit=3))
    service_type = triage.classify(question.text).service_type
    handed_off = service_type is ServiceType.CONTACT_HUMAIN
    answer = offline.answer(
        question.text,
        language=languages.detect(question.text),
        service_type=triage.default if handed_off else service_type,
    )
    folded = fold(answer)
    return Outcome(
        question=question,
        ranked=ranked,
        answer=answer,
        fact_found=any(fold(fact) in folded for fact in question.facts),
        handed_off=handed_off,
    )


def score(outcomes: Iterable[Outcome]) -> Score:
    kept = list(outcomes)
    n = len(kept) or 1
    return Score(
        count=len(kept),
        hit1=sum(o.hit1 for o in kept) / n,
        hit3=sum(o.hit3 for o in kept) / n,
        fact=sum(o.fact_found for o in kept) / n,
        handed_off=sum(o.handed_off for o in kept),
    )
