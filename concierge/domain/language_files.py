"""Reading ``languages/<code>.toml``: every key checked, every mistake named.

What a file holds is described in ``languages/fr.toml``. A text missing
from a language with a ``fallback`` is taken from that language; without one, a
missing text stops the start with the file and the text named.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from concierge.domain.distress import DistressKind, DistressTable, Phrase, PhraseError, parse_phrase
from concierge.domain.errors import ConfigError
from concierge.domain.language import Detection, LanguageError, LanguagePack, Languages
from concierge.domain.replies import (
    OPTIONAL,
    PLACEHOLDERS,
    REQUIRED,
    OfflineText,
    PromptText,
    Reply,
)
from concierge.domain.smalltalk import SmallTalk
from concierge.domain.text import Stemmer, words
from concierge.domain.toml_files import read_toml

_CODE = re.compile(r"^[a-z]{2,3}$")
_TOP_KEYS = frozenset(
    {"name", "default", "stemmer", "fallback", "prompts", "detect", "search", "conversation",
     "small_talk", "triage", "distress", "texts", "offline", "prompt"}
)  # fmt: skip
_TEXT_TABLES: tuple[tuple[str, type[Reply] | type[OfflineText] | type[PromptText]], ...] = (
    ("texts", Reply),
    ("offline", OfflineText),
    ("prompt", PromptText),
)


class _File:
    """One parsed file and the helpers that name it in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = read_toml(path, LanguageError, what="the language file")
        unknown = sorted(set(self.data) - _TOP_KEYS)
        if unknown:
            raise self.error(", ".join(unknown), f"unknown key, expected {sorted(_TOP_KEYS)}")

    def error(self, key: str, problem: str) -> LanguageError:
        return LanguageError(f"{self.path}: {key}: {problem}")

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return value

    def text(self, table: Mapping[str, Any], key: str, *, where: str, default: str = "") -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.error(
                f"{where}.{key}" if where else key, f"expected a string, got {value!r}"
            )
        return value

    def word_set(self, table: Mapping[str, Any], key: str, *, where: str) -> frozenset[str]:
        """A string of words separated by spaces, folded like messages are."""
        return frozenset(words(self.text(table, key, where=where)))

    def phrases(self, table: Mapping[str, Any], key: str, *, where: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(f"{where}.{key}", "expected a list of non-empty strings")
        return tuple(value)


def _detection(f: _File) -> Detection:
    table = f.table("detect")
    patterns = []
    for pattern in f.phrases(table, "patterns", where="detect"):
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            problem = f"{pattern!r} is not a regular expression: {exc}"
            raise f.error("detect.patterns", problem) from None
    return Detection(
        words=f.word_set(table, "words", where="detect"),
        weak_words=f.word_set(table, "weak_words", where="detect"),
        letters=frozenset(f.text(table, "letters", where="detect").lower()),
        patterns=tuple(patterns),
    )


def _phrases(f: _File, table: Mapping[str, Any], key: str, *, where: str) -> tuple[Phrase, ...]:
    parsed = []
    for text in f.phrases(table, key, where=where):
        try:
            parsed.append(parse_phrase(text))
        except PhraseError as exc:
            raise f.error(f"{where}.{key}", f"{text!r}: {exc}") from None
    return tuple(parsed)


def _distress(f: _File) -> DistressTable:
    """``[distress]``: ``not`` (figures of speech) and a ``[distress.<kind>]`` table per kind.

    A kind's ``label`` is what staff read (from the default language's file).
    """
    table = f.table("distress")
    kinds = [k.value for k in DistressKind]
    unknown = sorted(set(table) - {"not", *kinds})
    if unknown:
        raise f.error(f"distress.{unknown[0]}", f"unknown key, expected not or one of {kinds}")
    phrases: dict[DistressKind, tuple[Phrase, ...]] = {}
    labels: dict[DistressKind, str] = {}
    for kind in DistressKind:
        where = f"distress.{kind.value}"
        entry = table.get(kind.value)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise f.error(where, "must be a table (label, phrases)")
        allowed = {"label"} if kind is DistressKind.JUDGED else {"label", "phrases"}
        extra = sorted(set(entry) - allowed)
        if extra:
            raise f.error(f"{where}.{extra[0]}", f"unknown key, expected {sorted(allowed)}")
        if "label" in entry:
            labels[kind] = f.text(entry, "label", where=where).strip()
            if not labels[kind]:
                raise f.error(f"{where}.label", "an empty label (leave it out to show the kind)")
        if kind is not DistressKind.JUDGED:
            phrases[kind] = _phrases(f, entry, "phrases", where=where)
    return DistressTable(
        phrases=phrases,
        not_distress=_phrases(f, table, "not", where="distress"),
        labels=labels,
    )


def _texts(f: _File, key: str, names: Iterable[str]) -> dict[str, str]:
    table = f.table(key)
    known = set(names)
    unknown = sorted(set(table) - known)
    if unknown:
        raise f.error(f"[{key}] {', '.join(unknown)}", f"unknown text, expected {sorted(known)}")
    texts = {}
    for name in table:
        text = f.text(table, name, where=key)
        _check_placeholders(
            f,
            f"{key}.{name}",
            text,
            PLACEHOLDERS.get(name, frozenset()),
            REQUIRED.get(name, frozenset()),
        )
        texts[name] = text
    return texts


def _check_placeholders(
    f: _File, where: str, text: str, allowed: frozenset[str], required: frozenset[str]
) -> None:
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise f.error(where, f"{exc} (write a literal brace as {{{{ or }}}})") from None
    wrong = sorted(used - allowed)
    if wrong:
        can = ", ".join(f"{{{a}}}" for a in sorted(allowed)) or "none"
        raise f.error(where, f"unknown placeholder {{{wrong[0]}}} (this text may use: {can})")
    missing = sorted(required - used)
    if missing:
        raise f.error(where, f"placeholder {{{missing[0]}}} missing (this text must use it)")


def _pack(f: _File, code: str) -> LanguagePack:
    data = f.data
    default = data.get("default", False)
    if not isinstance(default, bool):
        raise f.error("default", f"expected true or false, got {default!r}")
    stemmer_name = f.text(data, "stemmer", where="", default="none")
    try:
        Stemmer(None if stemmer_name == "none" else stemmer_name)
    except ConfigError as exc:
        raise f.error("stemmer", str(exc)) from None
    conversation = f.table("conversation")
    small_talk = f.table("small_talk")
    unknown = sorted(set(small_talk) - {k.value for k in SmallTalk} - {"filler"})
    if unknown:
        raise f.error(
            f"small_talk.{unknown[0]}", f"unknown kind, expected {[k.value for k in SmallTalk]}"
        )
    texts = {name: _texts(f, name, kind) for name, kind in _TEXT_TABLES}
    return LanguagePack(
        code=code,
        name=f.text(data, "name", where="", default=code),
        default=default,
        stemmer=None if stemmer_name == "none" else stemmer_name,
        fallback=f.text(data, "fallback", where="") or None,
        prompts=f.text(data, "prompts", where="", default=code),
        detection=_detection(f),
        stopwords=f.word_set(f.table("search"), "stopwords", where="search"),
        follow_up=f.phrases(conversation, "follow_up", where="conversation"),
        question_words=f.word_set(conversation, "question_words", where="conversation"),
        small_talk={k: f.phrases(small_talk, k.value, where="small_talk") for k in SmallTalk},
        filler=f.word_set(small_talk, "filler", where="small_talk"),
        triage=f.table("triage"),
        distress=_distress(f),
        texts=texts["texts"],
        offline=texts["offline"],
        prompt=texts["prompt"],
    )


def _complete(packs: dict[str, LanguagePack], paths: Mapping[str, Path]) -> list[LanguagePack]:
    """Fill each language's missing texts from its fallback; refuse what is still missing."""
    done: dict[str, LanguagePack] = {}

    def resolve(code: str, seen: tuple[str, ...]) -> LanguagePack:
        if code in done:
            return done[code]
        pack = packs[code]
        base: dict[str, Mapping[str, str]] = {"texts": {}, "offline": {}, "prompt": {}}
        if pack.fallback is not None:
            if pack.fallback not in packs:
                raise LanguageError(
                    f"{paths[code]}: fallback: no language file {pack.fallback}.toml"
                )
            if pack.fallback in seen:
                raise LanguageError(f"{paths[code]}: fallback: a loop through {pack.fallback}")
            parent = resolve(pack.fallback, (*seen, code))
            base = {"texts": parent.texts, "offline": parent.offline, "prompt": parent.prompt}
        merged = {name: {**base[name], **getattr(pack, name)} for name in base}
        for name, kind in _TEXT_TABLES:
            missing = sorted(k.value for k in kind if k not in merged[name] and k not in OPTIONAL)
            if missing and not (name == "prompt" and pack.prompts != code):
                raise LanguageError(
                    f"{paths[code]}: [{name}] misses {', '.join(missing)} (and no fallback has them)"
                )
        if pack.prompts not in packs:
            raise LanguageError(f"{paths[code]}: prompts: no language file {pack.prompts}.toml")
        done[code] = attrs.evolve(
            pack, texts=merged["texts"], offline=merged["offline"], prompt=merged["prompt"]
        )
        return done[code]

    return [resolve(code, ()) for code in packs]


def load_languages(directory: Path) -> Languages:
    """Read every ``<code>.toml`` in ``directory`` (``config/languages``)."""
    if not directory.is_dir():
        raise LanguageError(
            f"{directory}: the languages directory does not exist (CONCIERGE_CONFIG_DIR)"
        )
    packs: dict[str, LanguagePack] = {}
    paths: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        code = path.stem
        if _CODE.match(code) is None:
            raise LanguageError(
                f"{path}: a language file is named by its ISO 639 code, like fr.toml or wo.toml"
            )
        packs[code] = _pack(_File(path), code)
        paths[code] = path
    if not packs:
        raise LanguageError(f"{directory}: no language file (<code>.toml) in it")
    return Languages(_complete(packs, paths))
