"""Words as the concierge compares them: folded, tokenised, and stemmed with Snowball.

People type without accents and with other endings than the text has ("inscrire" for
"inscriptions"); every comparison of a message with the knowledge base or the
triage rules goes through the same folding, and retrieval through one stemmer.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import Generic, TypeVar

import attrs
import Stemmer as _snowball

from concierge.domain.errors import ConfigError

T = TypeVar("T")

_TOKEN = re.compile(r"[a-z0-9]+")
_CACHED_WORDS_CHARS = 4000
_ON_THE_HOUR = re.compile(r"^(\d{1,2}h)00$")

MIN_TYPO_LENGTH = 5
"""Shorter words are compared whole: one letter off in a short word is another word."""

STEMMERS: frozenset[str] = frozenset(_snowball.algorithms())
"""The Snowball algorithms a language file may name (``french``, ``english``, …)."""


def fold(text: str) -> str:
    """Lower case without accents, so ``Catéchèse`` and ``catechese`` are one word."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().replace("œ", "oe").replace("æ", "ae")


def words(text: str) -> tuple[str, ...]:
    """Folded tokens, stopwords kept: what triage, small talk and language detection see.

    Memoised for ordinary messages: one message's text goes through language
    detection, small talk, triage and retrieval in the same turn. Long texts are not kept.
    """
    if len(text) <= _CACHED_WORDS_CHARS:
        return _cached_words(text)
    return tuple(_TOKEN.findall(fold(text)))


@functools.lru_cache(maxsize=1024)
def _cached_words(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(fold(text)))


def typo_keys(word: str) -> tuple[str, ...]:
    """The word, then each way of dropping one of its letters (in order, without repeats).

    Two words share a key when they are one typo apart: a letter missing, added or
    changed, or two letters swapped (symmetric deletion, as SymSpell does).
    """
    return tuple(dict.fromkeys((word, *(word[:i] + word[i + 1 :] for i in range(len(word))))))


class TypoIndex(Generic[T]):
    """Values filed under words, found again from a word one typo away."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[T]] = {}

    def add(self, word: str, value: T) -> None:
        for key in typo_keys(word):
            self._by_key.setdefault(key, []).append(value)

    def near(self, word: str) -> Iterable[T]:
        """The values of every word within one typo of ``word`` (its own included), once each."""
        found: dict[T, None] = {}
        for key in typo_keys(word):
            found.update(dict.fromkeys(self._by_key.get(key, ())))
        return found.keys()


class Stemmer:
    """A Snowball stemmer named by a language file, or none (words are kept whole).

    PyStemmer (the C Snowball library) stems a word in about 0.1 µs and keeps a
    cache of the words it has seen; the pure-Python ``snowballstemmer`` takes 55 µs.
    """

    def __init__(self, algorithm: str | None) -> None:
        if algorithm is not None and algorithm not in STEMMERS:
            raise ConfigError(
                f"unknown stemmer {algorithm!r}: expected none or one of {', '.join(sorted(STEMMERS))}"
            )
        self.algorithm = algorithm
        self._stemmer = _snowball.Stemmer(algorithm) if algorithm is not None else None

    def stem(self, word: str) -> str:
        if self._stemmer is None or word.isdigit():
            return word
        stem: str = self._stemmer.stemWord(word)
        return stem

    def __repr__(self) -> str:
        return f"Stemmer({self.algorithm!r})"


@attrs.frozen(kw_only=True)
class Analyzer:
    """How retrieval reads text: the knowledge's stemmer and every language's stopwords."""

    stemmer: Stemmer
    stopwords: frozenset[str]

    @staticmethod
    def words(text: str) -> tuple[str, ...]:
        return words(text)

    def stem(self, word: str) -> str:
        """The word's stem; a time on the hour is written one way ("8h00" and "8h" are "8h")."""
        hour = _ON_THE_HOUR.match(word)
        return hour.group(1) if hour is not None else self.stemmer.stem(word)

    def is_stopword(self, word: str) -> bool:
        return word in self.stopwords

    def terms(self, text: str, *, keep_stopwords: bool = False) -> list[str]:
        """Folded, stemmed tokens (without stopwords unless asked): what an index holds."""
        stem = self.stem
        return [stem(w) for w in words(text) if keep_stopwords or w not in self.stopwords]

    def keys(self, word: str) -> set[str]:
        """Where a synonym table entry is found: the folded word and its stem."""
        folded = " ".join(words(word))
        return {folded, self.stemmer.stem(folded)}
