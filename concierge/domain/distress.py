"""Messages from a person in danger now, found by rules before anything else in a turn.

A parish concierge receives them: thoughts of suicide or self-harm, abuse or violence,
a medical emergency, someone dying who asks for a priest. Each must reach a person at
once whether or not a provider answers, so rules find them, not a model: the
``[distress]`` tables of each language file (``languages/fr.toml`` says how to
write them). Every language's rules apply to every message, as people mix languages.

A word of a phrase matches a word of the message when both are the same once folded
(no accents, lower case), or have the same stem in the phrase's language ("frappe",
"frapper"), or are one typo apart, for words of four letters or more whose first
letter is right ("suicder", "mourrir", "wnat"; never "courir" for "mourir"); ``word*``
takes any ending. Figures of speech and negations ("mort de rire", "dying to know", "don't
want to die") are the language's ``not`` phrases: one cancels every alarm phrase it
overlaps, unless that phrase covers all of it and so says more ("en finir avec la
vie" stands where "en finir avec" is a figure).

A provider that answers may raise the alarm too (``read_judgement``); nothing a
provider says can lower it, since a message the rules caught never reaches one.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from concierge.domain.text import MIN_TYPO_LENGTH, Stemmer, TypoIndex, words


class DistressKind(enum.StrEnum):
    SELF_HARM = "self_harm"
    ABUSE = "abuse"
    MEDICAL = "medical"
    DYING = "dying"
    JUDGED = "judged"
    """A provider judged the message an emergency; no rule found it."""


RULE_KINDS: tuple[DistressKind, ...] = (
    DistressKind.SELF_HARM,
    DistressKind.ABUSE,
    DistressKind.MEDICAL,
    DistressKind.DYING,
)
"""The kinds rules find, in the order staff read them when one message has several."""

GAP_WORDS = 3
"""How many words ``...`` in a phrase may skip."""
MIN_TYPO_WORD = MIN_TYPO_LENGTH - 1
"""Words this long tolerate a typo: one letter shorter than for retrieval, since distress
words are short ("want", "veux") and a missed alarm costs more than a false one."""
MIN_STEM = 4
"""Shorter stems are no evidence ("tu" is the stem of "tuer" and a pronoun)."""
DETECT_CHARS = 20_000
"""Only the start of a huge message is read (the longest a messenger sends is 4,096 to
65,536 characters; the turn refuses those past ``CONCIERGE_MAX_MESSAGE_CHARS`` anyway)."""

URGENT_MARKER = "[[URGENT]]"
"""What a provider puts at the start of its reply when it judges the message an emergency."""
_MARKER = re.compile(r"\[\[?\s*urgent\s*\]\]?", re.IGNORECASE)
_LEADING_MARKER = re.compile(r"\A[\s*_`]*" + _MARKER.pattern, re.IGNORECASE)


def read_judgement(reply: str) -> tuple[bool, str]:
    """Whether a provider judged the message an emergency, and its reply without any marker.

    Only a marker at the start counts, as the instructions ask (a reply that echoes the
    instructions carries one further on: the prompt-echo check withholds that reply).
    A judged reply is never sent (the person gets the fixed emergency reply); any other
    loses every marker, however spaced, so none reaches the person. A user who talks
    the model into writing it gets what they could ask for anyway: a person of the
    parish, flagged urgent.
    """
    judged = _LEADING_MARKER.match(reply) is not None
    return judged, _MARKER.sub("", reply).strip() if _MARKER.search(reply) else reply


class PhraseError(ValueError):
    """A phrase does not follow the grammar; the message says where."""


@attrs.frozen(kw_only=True)
class Word:
    text: str
    prefix: bool = False
    """``word*``: any ending."""


@attrs.frozen(kw_only=True)
class Choice:
    """One of several runs of words (``(a|b c)``); ``optional`` (``[a|b]``) may match none."""

    options: tuple[tuple[Word, ...], ...]
    optional: bool = False


@attrs.frozen(kw_only=True)
class Gap:
    """``...``: up to ``GAP_WORDS`` words of any kind."""


@attrs.frozen(kw_only=True)
class Phrase:
    text: str
    items: tuple[Choice | Gap, ...]


_PIECE = re.compile(r"\.\.\.|[()\[\]|]|[^\s()\[\]|]+")
_SYNTAX = frozenset({"(", ")", "[", "]", "|", "..."})


def _run(chunks: Sequence[str]) -> tuple[Word, ...]:
    """Words as messages are cut (``d'en`` is two), a trailing ``*`` on a chunk kept."""
    run: list[Word] = []
    for chunk in chunks:
        found = words(chunk.rstrip("*"))
        if not found:
            raise PhraseError(f"{chunk!r} has no letters or digits")
        run.extend(Word(text=w) for w in found[:-1])
        run.append(Word(text=found[-1], prefix=chunk.endswith("*")))
    return tuple(run)


def parse_phrase(text: str) -> Phrase:
    """Read one phrase: words, ``word*``, ``(a|b c)``, ``[a|b]`` and ``...``."""
    pieces = _PIECE.findall(text)
    items: list[Choice | Gap] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if piece == "...":
            items.append(Gap())
            i += 1
        elif piece in ("(", "["):
            close = ")" if piece == "(" else "]"
            try:
                end = pieces.index(close, i)
            except ValueError:
                raise PhraseError(f"{piece} without {close}") from None
            inner = pieces[i + 1 : end]
            if any(p in _SYNTAX - {"|"} for p in inner):
                raise PhraseError(f"nothing but words and | inside {piece}{close}")
            options, current = [], []
            for p in [*inner, "|"]:
                if p != "|":
                    current.append(p)
                    continue
                if not current:
                    raise PhraseError(f"an empty choice in {piece}{close}")
                options.append(_run(current))
                current = []
            items.append(Choice(options=tuple(options), optional=piece == "["))
            i = end + 1
        elif piece in (")", "]", "|"):
            raise PhraseError(f"{piece} out of place")
        else:
            start = i
            while i < len(pieces) and pieces[i] not in _SYNTAX:
                i += 1
            items.append(Choice(options=(_run(pieces[start:i]),)))
    if not items:
        raise PhraseError("an empty phrase")
    first, last = items[0], items[-1]
    if isinstance(first, Gap) or first.optional or isinstance(last, Gap):
        raise PhraseError("a phrase starts and ends with words it needs, not [..] or ...")
    return Phrase(text=text, items=tuple(items))


@attrs.frozen(kw_only=True)
class DistressTable:
    """One language file's ``[distress]``: alarm phrases by kind, figures, staff labels."""

    phrases: Mapping[DistressKind, tuple[Phrase, ...]] = attrs.field(factory=dict)
    not_distress: tuple[Phrase, ...] = ()
    labels: Mapping[DistressKind, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Distress:
    """What the rules found in a message: its kinds (in ``RULE_KINDS`` order).

    ``phrases`` are the rules that matched, for tests and for whoever tunes the rules;
    they are never logged (they would say what the person wrote).
    """

    kinds: tuple[DistressKind, ...]
    phrases: tuple[str, ...]


@attrs.frozen
class _Rule:
    kind: DistressKind | None
    """``None`` for a figure of speech."""
    text: str
    items: tuple[tuple[tuple[int, ...], ...] | None, ...]
    """Per item of the phrase, each option as the term ids of its words (``None`` for a gap)."""
    optional: tuple[bool, ...]
    needs: tuple[frozenset[int], ...]
    """Per required item, the first words of its options: a message without one of them
    anywhere cannot match (checked once per message, before trying any position)."""

    def possible(self, present: frozenset[int]) -> bool:
        return all(not need.isdisjoint(present) for need in self.needs)

    def end(self, tokens: Sequence[frozenset[int]], start: int) -> int | None:
        """Where this rule ends when it matches from ``start`` (the first way found)."""

        def match(k: int, pos: int) -> int | None:
            if k == len(self.items):
                return pos
            options = self.items[k]
            if options is None:  # a gap
                for skip in range(min(GAP_WORDS, len(tokens) - pos) + 1):
                    end = match(k + 1, pos + skip)
                    if end is not None:
                        return end
                return None
            for option in options:
                if pos + len(option) <= len(tokens) and all(
                    t in tokens[pos + j] for j, t in enumerate(option)
                ):
                    end = match(k + 1, pos + len(option))
                    if end is not None:
                        return end
            return match(k + 1, pos) if self.optional[k] else None

        return match(0, start)


_NO_TERMS: frozenset[int] = frozenset()
"""What most message words stand for: one shared object, not one per word the cache keeps."""


class _Lexicon:
    """Every word the rules name, each a term, and which terms a message word stands for."""

    def __init__(self, cache_size: int = 8192) -> None:
        self._terms: dict[tuple[str, bool, str | None], int] = {}
        self._first_letters: list[str] = []
        self._exact: dict[str, set[int]] = {}
        self._prefixes: dict[str, set[int]] = {}
        self._prefix_lengths: tuple[int, ...] = ()
        self._stems: dict[str, tuple[Stemmer, dict[str, set[int]]]] = {}
        self._typos = TypoIndex[int]()
        self.lookup = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def term(self, word: Word, stemmer: Stemmer) -> int:
        key = (word.text, word.prefix, stemmer.algorithm)
        if key in self._terms:
            return self._terms[key]
        term = self._terms[key] = len(self._terms)
        self._first_letters.append(word.text[0])
        if word.prefix:
            self._prefixes.setdefault(word.text, set()).add(term)
            self._prefix_lengths = tuple(sorted({len(p) for p in self._prefixes}))
            return term
        self._exact.setdefault(word.text, set()).add(term)
        stem = stemmer.stem(word.text)
        if stemmer.algorithm is not None and len(stem) >= MIN_STEM:
            _, stems = self._stems.setdefault(stemmer.algorithm, (stemmer, {}))
            stems.setdefault(stem, set()).add(term)
        if len(word.text) >= MIN_TYPO_WORD:
            self._typos.add(word.text, term)
        return term

    def _lookup(self, token: str) -> frozenset[int]:
        found = set(self._exact.get(token, ()))
        for length in self._prefix_lengths:
            if length > len(token):
                break
            found |= self._prefixes.get(token[:length], set())
        for stemmer, stems in self._stems.values():
            found |= stems.get(stemmer.stem(token), set())
        if len(token) >= MIN_TYPO_WORD:
            found.update(t for t in self._typos.near(token) if self._first_letters[t] == token[0])
        return frozenset(found) if found else _NO_TERMS


class DistressRules:
    """Every language's distress phrases and figures of speech, ready to read messages."""

    def __init__(self, tables: Iterable[tuple[Stemmer, DistressTable]]) -> None:
        self._lexicon = _Lexicon()
        self._by_first: dict[int, list[_Rule]] = {}
        self.rules = 0
        """How many alarm phrases (figures of speech not counted)."""
        for stemmer, table in tables:
            entries: list[tuple[DistressKind | None, Phrase]] = [
                (k, p) for k in RULE_KINDS for p in table.phrases.get(k, ())
            ]
            entries.extend((None, p) for p in table.not_distress)
            for kind, phrase in entries:
                rule = self._compile(kind, phrase, stemmer)
                first = rule.items[0]
                assert first is not None  # parse_phrase refuses a phrase that starts with a gap
                for term in dict.fromkeys(option[0] for option in first):
                    self._by_first.setdefault(term, []).append(rule)
                self.rules += kind is not None

    def _compile(self, kind: DistressKind | None, phrase: Phrase, stemmer: Stemmer) -> _Rule:
        term = self._lexicon.term
        items = tuple(
            None
            if isinstance(item, Gap)
            else tuple(tuple(term(w, stemmer) for w in option) for option in item.options)
            for item in phrase.items
        )
        optional = tuple(isinstance(item, Choice) and item.optional for item in phrase.items)
        return _Rule(
            kind=kind,
            text=phrase.text,
            items=items,
            optional=optional,
            needs=tuple(
                frozenset(option[0] for option in options)
                for options, skip in zip(items, optional, strict=True)
                if options is not None and not skip
            ),
        )

    def detect(self, text: str) -> Distress | None:
        """The distress ``text`` speaks of, or ``None``."""
        tokens = [self._lexicon.lookup(t) for t in words(text[:DETECT_CHARS])]
        present = frozenset[int]().union(*tokens)
        possible: dict[int, bool] = {}
        hits: list[tuple[_Rule, int, int]] = []
        figures: list[tuple[int, int]] = []
        for start, found in enumerate(tokens):
            tried: set[int] = set()
            for term in found:
                for rule in self._by_first.get(term, ()):
                    if id(rule) in tried:
                        continue
                    tried.add(id(rule))
                    if id(rule) not in possible:
                        possible[id(rule)] = rule.possible(present)
                    if not possible[id(rule)]:
                        continue
                    end = rule.end(tokens, start)
                    if end is None:
                        continue
                    if rule.kind is None:
                        figures.append((start, end))
                    else:
                        hits.append((rule, start, end))
        kept = [
            rule
            for rule, start, end in hits
            if not any(
                f_start < end and start < f_end and not (start <= f_start and f_end <= end)
                for f_start, f_end in figures
            )
        ]
        if not kept:
            return None
        kinds = {r.kind for r in kept}
        return Distress(
            kinds=tuple(k for k in RULE_KINDS if k in kinds),
            phrases=tuple(dict.fromkeys(r.text for r in kept)),
        )
