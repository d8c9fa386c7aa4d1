"""The community's facts: Markdown files cut into passages, searched with BM25.

Handwritten rather than ``bm25s``: a parish knowledge base is a hundred passages,
and what finds the fact is how a question's words meet the text's, not index
speed. Both sides are folded (no accents) and stemmed with Snowball; a query word
also reaches its synonyms (``synonyms.toml``: English to French, verbs to
nouns) and, when the text does not have it, the text's words it is a typo or a
derivation of ("chorrale", "coordonne" for "coordinatrice"). A passage scores with
its section's headings and its own label ("Téléphone : …") as strong context, and
the rest of its section as weak context. Everything is indexed once, at load;
a question costs a few dictionary look-ups per word.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from concierge.domain.errors import ConfigError
from concierge.domain.sections import Passage, Section, split_passages, split_sections
from concierge.domain.text import MIN_TYPO_LENGTH, Analyzer, TypoIndex
from concierge.domain.toml_files import read_toml


class KnowledgeError(ConfigError):
    """The knowledge base (or its synonym table) cannot be loaded; the message names the file."""


@attrs.frozen(kw_only=True)
class Hit:
    """A passage that matches a question, with its score and the share of the question it covers."""

    passage: Passage
    score: float
    coverage: float

    @property
    def section(self) -> Section:
        return self.passage.section


@attrs.frozen(kw_only=True)
class _Group:
    """One query word: the index terms that stand for it, each with how much it counts."""

    alternatives: Mapping[str, float]
    weight: float
    """Its share in coverage: rare words weigh more; a stopword reached by synonym weighs 0."""


# How much an occurrence counts, by where it is (an occurrence in the text counts 1).
TITLE_BOOST = 2.0
PARENT_BOOST = 0.6
LABEL_BOOST = 1.5
CONTEXT_BOOST = 0.5
# How much a query word's stand-ins count against the word itself.
SYNONYM = 0.9
DERIVED = 0.8
TYPO = 0.7
MIN_DERIVED_PREFIX = 5


class KnowledgeBase:
    """Passages indexed for BM25 (k1=1.2, b=0.3: passages are short and alike in length)."""

    K1 = 1.2
    B = 0.3

    def __init__(
        self,
        sections: Sequence[Section],
        *,
        analyzer: Analyzer,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        cache_size: int = 1024,
    ) -> None:
        """``cache_size`` questions (and four times as many words) keep their results."""
        self.sections: tuple[Section, ...] = tuple(sections)
        self.passages: tuple[Passage, ...] = tuple(
            p for section in self.sections for p in split_passages(section)
        )
        self.analyzer = analyzer
        self.synonyms: Mapping[str, Sequence[str]] = dict(synonyms or {})
        self._synonyms: dict[str, tuple[str, ...]] = {}
        for word, expansions in (synonyms or {}).items():
            found = tuple(t for e in expansions for t in analyzer.terms(e, keep_stopwords=True))
            for key in analyzer.keys(word):
                self._synonyms[key] = tuple(dict.fromkeys((*self._synonyms.get(key, ()), *found)))
        self._index()
        self._expand = functools.lru_cache(maxsize=cache_size * 4)(self._expand_uncached)
        self._ranked = functools.lru_cache(maxsize=cache_size)(self._ranked_uncached)

    # -- indexing ------------------------------------------------------------------------
    def _index(self) -> None:
        terms = self.analyzer.terms
        docs: list[dict[str, float]] = []
        lengths: list[int] = []
        df: dict[str, int] = {}
        section_terms: dict[Section, set[str]] = {}
        for section in self.sections:
            heading = {t for h in section.path for t in terms(h)}
            section_terms[section] = heading | set(terms(section.body))
            for t in section_terms[section]:
                df[t] = df.get(t, 0) + 1
        for passage in self.passages:
            body = terms(passage.text)
            docs.append(self._term_weights(passage, body, section_terms[passage.section]))
            lengths.append(len(body))
        n = len(self.sections)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self._max_idf = max(self._idf.values(), default=1.0)
        average = (sum(lengths) / len(lengths)) if lengths else 1.0
        # term -> [(passage index, BM25 weight of the term in that passage)]
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, (doc, length) in enumerate(zip(docs, lengths, strict=True)):
            norm = self.K1 * (1 - self.B + self.B * length / average)
            for term, tf in doc.items():
                weight = self._idf[term] * tf * (self.K1 + 1) / (tf + norm)
                self._postings.setdefault(term, []).append((i, weight))
        self._index_derived_forms()

    def _term_weights(
        self, passage: Passage, body: Sequence[str], context: set[str]
    ) -> dict[str, float]:
        """A passage's term frequencies, its label's and headings' terms boosted, and the
        rest of its section's terms (``context``) present at a low weight."""
        terms = self.analyzer.terms
        section = passage.section
        doc: dict[str, float] = {}
        for t in body:
            doc[t] = doc.get(t, 0.0) + 1.0
        for t in set(terms(passage.label)):
            doc[t] = doc.get(t, 0.0) + LABEL_BOOST
        for t in set(terms(section.title)):
            doc[t] = doc.get(t, 0.0) + TITLE_BOOST
        for t in {t for h in section.path[:-1] for t in terms(h)}:
            doc[t] = doc.get(t, 0.0) + PARENT_BOOST
        for t in context - doc.keys():
            doc[t] = CONTEXT_BOOST
        return doc

    def _index_derived_forms(self) -> None:
        """Index terms by prefix and by one deletion, for derived words and typos in queries."""
        self._by_prefix: dict[str, list[str]] = {}
        self._typos = TypoIndex[str]()
        for term in self._postings:
            if len(term) >= MIN_DERIVED_PREFIX:
                self._by_prefix.setdefault(term[:MIN_DERIVED_PREFIX], []).append(term)
            if len(term) >= MIN_TYPO_LENGTH - 1:
                self._typos.add(term, term)

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(s.source for s in self.sections)

    # -- queries -------------------------------------------------------------------------
    def _expand_uncached(self, word: str) -> _Group | None:
        """What one folded query word stands for in the index, or ``None`` for a bare stopword."""
        stem = self.analyzer.stem(word)
        synonyms = self._synonyms.get(word) or self._synonyms.get(stem, ())
        alternatives: dict[str, float] = {}
        if " " in word:  # a phrase of the synonym table: only its synonyms stand for it
            weight = max((self._idf.get(t, 0.0) for t in synonyms), default=0.0)
        elif self.analyzer.is_stopword(word):
            if not synonyms:
                return None
            weight = 0.0
        else:
            alternatives[stem] = 1.0
            weight = self._idf.get(stem, self._max_idf)
            if stem not in self._postings:
                for term in _near(stem, self._by_prefix, self._typos):
                    factor = DERIVED if term[:4] == stem[:4] else TYPO
                    alternatives.setdefault(term, factor)
                    for synonym in self._synonyms.get(term, ()):
                        alternatives.setdefault(synonym, factor * SYNONYM)
        for term in synonyms:
            alternatives.setdefault(term, SYNONYM)
        return _Group(alternatives=alternatives, weight=weight)

    def groups(self, query: str) -> list[_Group]:
        """One group per query word (or two-word phrase of the synonym table) the index knows."""
        tokens = self.analyzer.words(query)
        found: dict[str, _Group | None] = {}
        skip = False
        for first, second in zip(tokens, (*tokens[1:], ""), strict=True):
            if skip:
                skip = False
                continue
            phrase = f"{first} {second}"
            if second and phrase in self._synonyms:
                found[phrase] = self._expand(phrase)
                skip = True
            elif first not in found:
                found[first] = self._expand(first)
        return [g for g in found.values() if g is not None]

    def _ranked_uncached(self, query: str) -> tuple[tuple[int, float, float], ...]:
        """Every matching passage as (index, score, coverage), best first, ties in file order."""
        groups = self.groups(query)
        total = sum(g.weight for g in groups)
        scores: dict[int, float] = {}
        covered: dict[int, float] = {}
        for group in groups:
            best: dict[int, float] = {}
            for term, factor in group.alternatives.items():
                for i, weight in self._postings.get(term, ()):
                    best[i] = max(best.get(i, 0.0), weight * factor)
            for i, score in best.items():
                scores[i] = scores.get(i, 0.0) + score
                covered[i] = covered.get(i, 0.0) + group.weight
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return tuple((i, s, covered[i] / total if total else 1.0) for i, s in ranked)

    def search(
        self,
        query: str,
        *,
        limit: int = 3,
        sources: Collection[str] | None = None,
        min_coverage: float = 0.0,
    ) -> list[Hit]:
        """The passages that best answer ``query``, best first.

        ``sources`` restricts to some files; ``min_coverage`` is the share of the
        question (its words weighted by rarity) a passage and its headings must contain.
        """
        return list(self._hits(query, sources=sources, min_coverage=min_coverage, limit=limit))

    def _hits(
        self, query: str, *, sources: Collection[str] | None, min_coverage: float, limit: int
    ) -> Iterator[Hit]:
        kept = 0
        for i, score, coverage in self._ranked(query[:_MAX_QUERY_CHARS]):
            if kept == limit:
                return
            passage = self.passages[i]
            if coverage < min_coverage or (
                sources is not None and passage.section.source not in sources
            ):
                continue
            kept += 1
            yield Hit(passage=passage, score=score, coverage=coverage)

    def best_sections(self, query: str, *, limit: int = 3) -> list[Section]:
        """The sections of the best passages, without repeats: what a prompt quotes."""
        found: dict[Section, None] = {}
        for hit in self._hits(query, sources=None, min_coverage=0.0, limit=limit * 4):
            found.setdefault(hit.section)
            if len(found) == limit:
                break
        return list(found)


_MAX_QUERY_CHARS = 1000
"""Only the start of a long message is searched: a question is at its start."""


def _near(stem: str, by_prefix: Mapping[str, list[str]], typos: TypoIndex[str]) -> list[str]:
    """Index terms ``stem`` may stand for: derivations sharing its start, one-letter typos."""
    found: list[str] = []
    if len(stem) >= MIN_DERIVED_PREFIX:
        for term in by_prefix.get(stem[:MIN_DERIVED_PREFIX], ()):
            shared = len(_common_prefix(stem, term))
            if shared >= min(len(stem), len(term)) - 2:
                found.append(term)
    if len(stem) >= MIN_TYPO_LENGTH:
        found.extend(typos.near(stem))
    return list(dict.fromkeys(found))


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _load_synonyms(path: Path) -> dict[str, list[str]]:
    data = read_toml(path, KnowledgeError, what="the synonym table")
    table = data.get("synonyms", {})
    if not isinstance(table, dict):
        raise KnowledgeError(f"{path}: [synonyms] must be a table of word = [words]")
    result: dict[str, list[str]] = {}
    for word, expansions in table.items():
        if not isinstance(expansions, list) or not all(isinstance(e, str) for e in expansions):
            raise KnowledgeError(f"{path}: synonyms.{word} must be a list of strings")
        result[word] = expansions
    return result


def load_knowledge(config_dir: Path, analyzer: Analyzer) -> KnowledgeBase:
    """Read ``config_dir/knowledge/*.md`` (and ``config_dir/synonyms.toml`` when present)."""
    directory = config_dir / "knowledge"
    if not directory.is_dir():
        raise KnowledgeError(
            f"{directory}: the knowledge directory does not exist (CONCIERGE_CONFIG_DIR)"
        )
    sections: list[Section] = []
    for path in sorted(directory.glob("*.md")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeError(f"{path}: cannot read it: {exc}") from None
        sections.extend(split_sections(path.stem, text))
    synonyms_path = config_dir / "synonyms.toml"
    synonyms = _load_synonyms(synonyms_path) if synonyms_path.is_file() else {}
    return KnowledgeBase(sections, analyzer=analyzer, synonyms=synonyms)
