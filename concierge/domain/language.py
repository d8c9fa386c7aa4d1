"""The languages the concierge speaks, as data: one file each under ``languages/``.

A language file says how to recognise the language (a vote of frequent words,
letters and patterns: enough for short chat messages, and no model to ship), the
words retrieval skips, its greetings and small talk, follow-up markers and triage
keywords, and every fixed text. Adding a language is adding its file; nothing here
names one. A message too short or too mixed to tell keeps the conversation's
language, then the platform's hint, then the default language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from concierge.domain.distress import DistressKind, DistressRules, DistressTable
from concierge.domain.errors import ConfigError
from concierge.domain.replies import OfflineText, PromptText, Reply
from concierge.domain.smalltalk import SmallTalk, SmallTalkRules
from concierge.domain.text import Analyzer, Stemmer, fold, words

SAMPLE_CHARS = 1000
"""Only the start of a message is looked at: enough to tell, and cheap for huge inputs."""
LETTER_VOTES = 1.5
WEAK_VOTE = 0.5


class LanguageError(ConfigError):
    """A language file is missing or wrong; the message names the file and the key."""


@attrs.frozen(kw_only=True)
class Detection:
    """What marks a message as written in one language."""

    words: frozenset[str]
    weak_words: frozenset[str] = frozenset()
    letters: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()

    def votes(self, tokens: Sequence[str], lowered: str, folded: str) -> float:
        score = 0.0
        for token in tokens:
            if token in self.weak_words:
                score += WEAK_VOTE
            elif token in self.words:
                score += 1.0
        if self.letters and any(c in self.letters for c in lowered):
            score += LETTER_VOTES
        return score + sum(len(p.findall(folded)) for p in self.patterns)


@attrs.frozen(kw_only=True)
class LanguagePack:
    """One language file, validated; ``texts`` already include its fallback's."""

    code: str
    name: str
    default: bool
    stemmer: str | None
    fallback: str | None
    prompts: str
    """The language whose prompt templates providers get for this one."""
    detection: Detection
    stopwords: frozenset[str]
    follow_up: tuple[str, ...]
    question_words: frozenset[str]
    small_talk: Mapping[SmallTalk, tuple[str, ...]]
    filler: frozenset[str]
    triage: Mapping[str, Any]
    """The ``[triage.<SERVICE>]`` tables, as the triage rules read them."""
    distress: DistressTable
    texts: Mapping[str, str]
    offline: Mapping[str, str]
    prompt: Mapping[str, str]


class Languages:
    """Every language file loaded: detection, fixed texts, and what other parts take from them."""

    def __init__(self, packs: Sequence[LanguagePack]) -> None:
        if not packs:
            raise LanguageError("no language file: at least one is needed")
        defaults = [p.code for p in packs if p.default]
        if len(defaults) != 1:
            raise LanguageError(
                f"exactly one language file must say default = true, got {defaults or 'none'}"
            )
        self._packs = {p.code: p for p in packs}
        self.default: str = defaults[0]
        self.codes: tuple[str, ...] = tuple(self._packs)
        self.small_talk = SmallTalkRules(
            {
                kind: [p for pack in packs for p in pack.small_talk.get(kind, ())]
                for kind in SmallTalk
            },
            filler=[w for pack in packs for w in pack.filler],
        )

    def __contains__(self, code: object) -> bool:
        return code in self._packs

    def pack(self, code: str | None) -> LanguagePack:
        """The language ``code`` names, or the default one."""
        return self._packs.get(code or "", self._packs[self.default])

    @property
    def packs(self) -> tuple[LanguagePack, ...]:
        return tuple(self._packs.values())

    def analyzer(self) -> Analyzer:
        """How retrieval reads: the default language's stemmer (the knowledge base is written
        in it) and every language's stopwords (questions come in all of them)."""
        return Analyzer(
            stemmer=Stemmer(self.pack(self.default).stemmer),
            stopwords=frozenset(w for p in self._packs.values() for w in p.stopwords),
        )

    def distress(self) -> DistressRules:
        """Every language's distress rules, each stemmed in its own language."""
        return DistressRules((Stemmer(p.stemmer), p.distress) for p in self._packs.values())

    def distress_label(self, kinds: Sequence[DistressKind]) -> str:
        """What staff read about ``kinds``, in the default language (the staff's)."""
        labels = self.pack(self.default).distress.labels
        return ", ".join(labels.get(kind, kind.value) for kind in kinds)

    def normalise_hint(self, hint: str | None) -> str | None:
        """A platform's language code (``fr-FR``, ``en``) reduced to a known language or ``None``."""
        if not hint:
            return None
        code = hint.strip().lower().replace("_", "-").split("-")[0]
        return code if code in self._packs else None

    def detect(self, text: str, *, previous: str | None = None, hint: str | None = None) -> str:
        """The language of ``text``; a tie keeps ``previous``, then the ``hint``, then the default."""
        text = text[:SAMPLE_CHARS]
        tokens = words(text)
        lowered = text.lower()
        folded = fold(text).replace("’", "'")
        votes = {
            code: pack.detection.votes(tokens, lowered, folded)
            for code, pack in self._packs.items()
        }
        best = max(votes.values())
        tied = [code for code, vote in votes.items() if vote == best]
        if len(tied) == 1:
            return tied[0]
        for fallback in (self.normalise_hint(previous), self.normalise_hint(hint)):
            if fallback is not None and (best == 0 or fallback in tied):
                return fallback
        return self.default if self.default in tied or best == 0 else tied[0]

    def reply(self, reply: Reply, language: str | None, **params: Any) -> str:
        """The text of ``reply`` in ``language`` (the default one for anything unknown), filled in."""
        text = self.pack(language).texts[reply]
        return text.format(**params) if params else text

    def offline(self, key: OfflineText, language: str | None, **params: Any) -> str:
        text = self.pack(language).offline[key]
        return text.format(**params) if params else text

    def prompt_text(self, key: PromptText, language: str | None) -> str:
        """What the code adds to a provider's instructions; ``""`` when the language has none."""
        pack = self.pack(language)
        if key is PromptText.ANSWER_IN:
            return pack.prompt.get(key, "")
        return self.pack(pack.prompts).prompt[key]
