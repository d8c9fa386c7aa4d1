"""Decide which service a message asks for, from operator-edited rules.

The rules are ``triage.toml`` (how scores decide) and each language file's
``[triage.<SERVICE>]`` keywords: words and phrases matched on accent- and
case-folded text. They decide each message on its own. A message they cannot
place is the default service, unless it is a follow-up that only makes sense in
context ("et le samedi ?", "what about Friday?", two words without a question
word): that one keeps the conversation's current service. No model is involved:
triage must be predictable and cheap, and the rules are what an operator can read
and fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from concierge.domain.errors import ConfigError
from concierge.domain.language import Languages
from concierge.domain.text import words
from concierge.domain.toml_files import read_toml
from concierge.protocol import ServiceType


class TriageError(ConfigError):
    """The triage rules file is missing or wrong; the message names the file and the key."""


@attrs.frozen(kw_only=True)
class Pattern:
    """A word or phrase; ``prefix`` makes its last word match any ending."""

    text: str
    tokens: tuple[str, ...]
    prefix: bool
    weight: int

    def matches(self, tokens: Sequence[str]) -> bool:
        n = len(self.tokens)
        last = n - 1
        for start in range(len(tokens) - n + 1):
            for i, want in enumerate(self.tokens):
                got = tokens[start + i]
                if not (got == want or (self.prefix and i == last and got.startswith(want))):
                    break
            else:
                return True
        return False


@attrs.frozen(kw_only=True)
class TriageResult:
    """The decision, whether a rule made it (``confident``), and the patterns that matched.

    ``follow_up`` says an unplaced message was taken as a follow-up (it kept the
    current service, if there was one).
    """

    service_type: ServiceType
    confident: bool
    scores: Mapping[ServiceType, int]
    matched: tuple[str, ...]
    follow_up: bool = False


FOLLOW_UP_MAX_WORDS = 2
"""An unplaced message this short, without a question word, is a follow-up ("en semaine ?")."""


@attrs.frozen(kw_only=True)
class TriageRules:
    default: ServiceType
    handoff_threshold: int
    patterns: Mapping[ServiceType, tuple[Pattern, ...]]
    follow_up: tuple[tuple[str, ...], ...] = ()
    """Phrases that make an unplaced message a follow-up when it starts or ends with one."""
    question_words: frozenset[str] = frozenset()
    _by_first: Mapping[str, tuple[tuple[ServiceType, Pattern], ...]] = attrs.field(
        init=False, repr=False
    )
    _prefixed: Mapping[str, tuple[tuple[ServiceType, Pattern], ...]] = attrs.field(
        init=False, repr=False
    )
    _prefix_lengths: tuple[int, ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Index patterns by their first word so a message only tries the ones it could match;
        # one-word prefix patterns ("inscri*") are tried against every word.
        by_first: dict[str, list[tuple[ServiceType, Pattern]]] = {}
        prefixed: dict[str, list[tuple[ServiceType, Pattern]]] = {}
        for service_type, patterns in self.patterns.items():
            for pattern in patterns:
                if pattern.prefix and len(pattern.tokens) == 1:
                    prefixed.setdefault(pattern.tokens[0], []).append((service_type, pattern))
                else:
                    by_first.setdefault(pattern.tokens[0], []).append((service_type, pattern))
        object.__setattr__(self, "_by_first", {k: tuple(v) for k, v in by_first.items()})
        object.__setattr__(self, "_prefixed", {k: tuple(v) for k, v in prefixed.items()})
        # Only the lengths some prefix pattern has are worth slicing a word at.
        object.__setattr__(self, "_prefix_lengths", tuple(sorted({len(k) for k in prefixed})))

    def _matches(self, tokens: Sequence[str]) -> list[tuple[ServiceType, Pattern]]:
        found: dict[int, tuple[ServiceType, Pattern]] = {}
        for start, token in enumerate(tokens):
            for service_type, pattern in self._by_first.get(token, ()):
                if id(pattern) not in found and pattern.matches(
                    tokens[start : start + len(pattern.tokens)]
                ):
                    found[id(pattern)] = (service_type, pattern)
        for token in tokens:
            for end in self._prefix_lengths:
                if end > len(token):
                    break
                for service_type, pattern in self._prefixed.get(token[:end], ()):
                    found[id(pattern)] = (service_type, pattern)
        return list(found.values())

    def classify(self, text: str, *, current: ServiceType | None = None) -> TriageResult:
        """The service ``text`` asks for; ``current`` is the conversation's present one."""
        tokens = words(text)
        scores: dict[ServiceType, int] = dict.fromkeys(self.patterns, 0)
        matched: list[str] = []
        for service_type, pattern in self._matches(tokens):
            scores[service_type] += pattern.weight
            matched.append(f"{service_type.value}:{pattern.text}")
        human = scores.get(ServiceType.CONTACT_HUMAIN, 0)
        info = scores.get(ServiceType.RENSEIGNEMENT, 0)
        faith = scores.get(ServiceType.CATECHESE, 0)
        if human >= self.handoff_threshold:
            decided: ServiceType | None = ServiceType.CONTACT_HUMAIN
        elif info == 0 and faith == 0:
            decided = None
        else:
            decided = ServiceType.CATECHESE if faith > info else ServiceType.RENSEIGNEMENT
        if decided is not None:
            return TriageResult(
                service_type=decided, confident=True, scores=scores, matched=tuple(matched)
            )
        follow_up = self.is_follow_up(tokens)
        keep = follow_up and current not in (None, ServiceType.CONTACT_HUMAIN)
        return TriageResult(
            service_type=current if keep and current is not None else self.default,
            confident=False,
            scores=scores,
            matched=tuple(matched),
            follow_up=follow_up,
        )

    def is_follow_up(self, tokens: Sequence[str]) -> bool:
        """Whether a message only makes sense after the previous one.

        It starts or ends with a follow-up phrase ("et", "aussi", "what about"), or
        it is a couple of words without a question word of its own ("le samedi ?").
        A message with its own question ("qui est le curé ?") is never one.
        """
        if not tokens:
            return False
        for phrase in self.follow_up:
            n = len(phrase)
            if tuple(tokens[:n]) == phrase or (len(tokens) > n and tuple(tokens[-n:]) == phrase):
                return True
        return len(tokens) <= FOLLOW_UP_MAX_WORDS and not any(
            t in self.question_words for t in tokens
        )


def _pattern(entry: Any, *, where: str, weight: int) -> Pattern:
    if not isinstance(entry, str) or not entry.strip():
        raise TriageError(f"{where}: every entry must be a non-empty string, got {entry!r}")
    text = entry.strip()
    prefix = text.endswith("*")
    tokens = tuple(words(text.rstrip("*")))
    if not tokens:
        raise TriageError(f"{where}: {entry!r} has no letters or digits")
    return Pattern(text=text, tokens=tokens, prefix=prefix, weight=weight)


def _int(table: Mapping[str, Any], key: str, *, where: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TriageError(f"{where}.{key}: expected a whole number of at least 1, got {value!r}")
    return value


def parse_rules(
    data: Mapping[str, Any],
    *,
    source: str = "triage rules",
    languages: Languages | None = None,
) -> TriageRules:
    """Validate a parsed rules document, adding each language's keywords and follow-up phrases."""
    names = ", ".join(t.value for t in ServiceType)
    raw_default = data.get("default", ServiceType.RENSEIGNEMENT.value)
    try:
        default = ServiceType(raw_default)
    except ValueError:
        raise TriageError(
            f"{source}: default must be one of {names}, got {raw_default!r}"
        ) from None
    if default is ServiceType.CONTACT_HUMAIN:
        raise TriageError(
            f"{source}: default cannot be CONTACT_HUMAIN (an unclear message must not open a handoff)"
        )
    threshold = _int(data, "handoff_threshold", where=source, default=3)
    services = {k: v for k, v in data.items() if k not in _SETTINGS}
    packs = languages.packs if languages is not None else ()
    tables: list[tuple[str, Mapping[str, Any], bool]] = [(source, services, True)]
    tables.extend((f"language {p.code} [triage]", p.triage, False) for p in packs)
    patterns: dict[ServiceType, list[Pattern]] = {}
    for where, table, own in tables:
        for service_type, found in _service_patterns(where, table, services, weights_here=own):
            patterns.setdefault(service_type, []).extend(found)
    return TriageRules(
        default=default,
        handoff_threshold=threshold,
        patterns={t: tuple(p) for t, p in patterns.items()},
        follow_up=tuple(
            dict.fromkeys(words(p) for pack in packs for p in pack.follow_up if words(p))
        ),
        question_words=frozenset(w for pack in packs for w in pack.question_words),
    )


_SETTINGS = ("default", "handoff_threshold")


def _service_patterns(
    source: str, services: Mapping[str, Any], weighting: Mapping[str, Any], *, weights_here: bool
) -> Iterable[tuple[ServiceType, list[Pattern]]]:
    """Each ``[SERVICE]`` table's patterns, weighted as ``triage.toml`` (``weighting``) says."""
    names = ", ".join(t.value for t in ServiceType)
    allowed = (
        {"strong", "weak", "strong_weight", "weak_weight"} if weights_here else {"strong", "weak"}
    )
    for key, table in services.items():
        try:
            service_type = ServiceType(key)
        except ValueError:
            raise TriageError(f"{source}: unknown table [{key}], expected one of {names}") from None
        if not isinstance(table, dict):
            raise TriageError(f"{source}: [{key}] must be a table")
        where = f"{source} [{key}]"
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise TriageError(f"{where}: unknown key {unknown[0]}, expected {sorted(allowed)}")
        weights = weighting.get(key, {})
        found: list[Pattern] = []
        for strength in ("strong", "weak"):
            entries = table.get(strength, [])
            if not isinstance(entries, list):
                raise TriageError(f"{where}.{strength}: expected a list of strings")
            weight = _int(
                weights, f"{strength}_weight", where=where, default=3 if strength == "strong" else 1
            )
            found.extend(_pattern(e, where=f"{where}.{strength}", weight=weight) for e in entries)
        yield service_type, found


def load_triage(path: Path, languages: Languages) -> TriageRules:
    """Read and validate ``triage.toml``, with the languages' keywords."""
    data = read_toml(
        path,
        TriageError,
        what="the triage rules",
        missing="the triage rules file does not exist (CONCIERGE_CONFIG_DIR)",
    )
    return parse_rules(data, source=str(path), languages=languages)
