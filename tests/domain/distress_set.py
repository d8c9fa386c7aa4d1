"""The labelled distress set (``distress_labelled.tsv``) and how the rules are scored on it.

Shared by ``tests/domain/test_distress.py`` (the rules alone: figures per part, the
false-alarm ceiling) and ``tests/actors/test_distress.py`` (every message through a
running conversation: each one in distress becomes an urgent handoff).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from concierge.domain import DistressKind, DistressRules
from tests.domain.labelled_tsv import labelled_rows

LABELLED = Path(__file__).with_name("distress_labelled.tsv")
PARTS = ("tune", "held")
"""``tune``: the rules were tuned on it; ``held``: written with it, before any rule, never tuned on."""


@attrs.frozen(kw_only=True)
class Labelled:
    part: str
    expected: DistressKind | None
    """``None``: not an emergency (a figure of speech, ordinary sadness, a question)."""
    language: str
    text: str


def labelled() -> list[Labelled]:
    """The messages in file order."""
    return [
        Labelled(
            part=part,
            expected=None if expected == "none" else DistressKind(expected),
            language=language,
            text=text,
        )
        for part, (expected, language, text) in labelled_rows(LABELLED)
    ]


@attrs.frozen(kw_only=True)
class Score:
    caught: int
    distress: int
    false_alarms: int
    ordinary: int
    errors: tuple[tuple[Labelled, tuple[DistressKind, ...]], ...]
    """Messages the rules got wrong: a distress missed (or of another kind), a false alarm."""

    @property
    def recall(self) -> float:
        return self.caught / self.distress if self.distress else 1.0

    def line(self, name: str) -> str:
        return (
            f"{name}: recall {self.recall:.1%} ({self.caught} of {self.distress} in distress), "
            f"false alarms {self.false_alarms} of {self.ordinary}"
        )


def score(rows: list[Labelled], rules: DistressRules) -> Score:
    caught = false_alarms = 0
    errors = []
    for row in rows:
        found = rules.detect(row.text)
        kinds = found.kinds if found is not None else ()
        if row.expected is None and kinds:
            false_alarms += 1
            errors.append((row, kinds))
        elif row.expected is not None and row.expected in kinds:
            caught += 1
        elif row.expected is not None:
            errors.append((row, kinds))
    return Score(
        caught=caught,
        distress=sum(1 for r in rows if r.expected is not None),
        false_alarms=false_alarms,
        ordinary=sum(1 for r in rows if r.expected is None),
        errors=tuple(errors),
    )
