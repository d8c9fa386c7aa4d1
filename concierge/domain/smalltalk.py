"""Greetings, thanks and small talk: messages answered with a fixed text, not searched for.

"Bonjour", "merci beaucoup !", "na nga def ?" are not questions about the parish:
searching the knowledge base for them finds nothing and says so. A message is
small talk when it is made only of one language's small-talk phrases and filler
words; it is then answered with that kind's text, which offers what the concierge
can do. A greeting followed by a question is a question.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

from concierge.domain.replies import Reply
from concierge.domain.text import words

MAX_WORDS = 8
"""Longer messages are never small talk: a real question is searched for."""


class SmallTalk(enum.StrEnum):
    """The kinds, in the order that decides a mixed message ("bonjour, merci" is thanks)."""

    FAREWELL = "farewell"
    THANKS = "thanks"
    IDENTITY = "identity"
    WELLBEING = "wellbeing"
    GREETING = "greeting"
    ACKNOWLEDGEMENT = "acknowledgement"

    @property
    def reply(self) -> Reply:
        return Reply(self.value)


class SmallTalkRules:
    """Every language's small-talk phrases, tried longest first."""

    def __init__(
        self, phrases: Mapping[SmallTalk, Iterable[str]], *, filler: Iterable[str] = ()
    ) -> None:
        found: dict[tuple[str, ...], SmallTalk] = {}
        for kind in SmallTalk:  # earlier kinds win a phrase listed twice
            for phrase in phrases.get(kind, ()):
                tokens = words(phrase)
                if tokens:
                    found.setdefault(tokens, kind)
        self._phrases = found
        self._longest = max((len(p) for p in found), default=0)
        self._filler = frozenset(t for f in filler for t in words(f))

    def classify(self, text: str) -> SmallTalk | None:
        """The kind of small talk ``text`` is, or ``None`` when it says something else."""
        tokens = words(text)
        if not tokens or len(tokens) > MAX_WORDS:
            return None
        kinds = self._cover(tokens)
        if not kinds:
            return None
        return min(kinds, key=list(SmallTalk).index)

    def _cover(self, tokens: Sequence[str]) -> set[SmallTalk]:
        """The kinds whose phrases, with filler words, make up all of ``tokens`` (else empty)."""
        kinds: set[SmallTalk] = set()
        i = 0
        while i < len(tokens):
            for size in range(min(self._longest, len(tokens) - i), 0, -1):
                kind = self._phrases.get(tuple(tokens[i : i + size]))
                if kind is not None:
                    kinds.add(kind)
                    i += size
                    break
            else:
                if tokens[i] not in self._filler:
                    return set()
                i += 1
        return kinds
