"""The community's facts: Markdown files split into sections, searched with BM25.

Handwritten rather than ``bm25s``: a parish knowledge base is a few dozen
sections, the scoring is twenty lines, and folding accents, French/English
stopwords and a small bilingual synonym table matter more than index speed.
Nothing here touches the network.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from concierge.domain.errors import ConfigError


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS_FR = _wordset(
    """
    a ai au aux avec avez avoir c ca ce ces cet cette ceci cela celle celui ci d dans de des
    du elle elles en est et etre eu fait faut il ils j je l la le les leur leurs lui m ma mais
    me meme mes moi mon n ne ni nos notre nous o on ont ou par pas peu peut plus pour pouvez
    qu que quel quelle quelles quels qui s sa sans se ses si son sont sur t ta te tes toi ton
    tu un une unes uns vos votre vous y voudrais voudrait veux veut bonjour bonsoir merci svp
    stp comment quand combien quoi ya faire puis peux peut dois doit savoir aimerais souhaite
    souhaiterais voudrions
    """
)
STOPWORDS_EN = _wordset(
    """
    a about am an and any are as at be been but by can could do does did for from get got had
    has have he her him his how i if in into is it its me my no not of on or our please she so
    than that the their them then there these they this those to too us was we were what when
    where which who whom why will with would you your hi hello thanks thank
    """
)
STOPWORDS = STOPWORDS_FR | STOPWORDS_EN

_TOKEN = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


class KnowledgeError(ConfigError):
    """The knowledge base (or its synonym table) cannot be loaded; the message names the file."""


def fold(text: str) -> str:
    """Lower case without accents, so ``Catéchèse`` and ``catechese`` are one word."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().replace("œ", "oe").replace("æ", "ae")


def _stem(token: str) -> str:
    """A very light plural strip: ``messes`` → ``messe``, ``horaires`` → ``horaire``."""
    if len(token) > 3 and token[-1] in "sx" and token[-2] not in "su" and not token.isdigit():
        return token[:-1]
    return token


_CACHED_WORDS_CHARS = 4000


def words(text: str) -> tuple[str, ...]:
    """Folded tokens (stopwords kept): what triage and language detection look at.

    Memoised for ordinary messages: one message's text goes through language
    detection, triage and retrieval in the same turn. Long texts are not kept.
    """
    if len(text) <= _CACHED_WORDS_CHARS:
        return _cached_words(text)
    return tuple(_TOKEN.findall(fold(text)))


@functools.lru_cache(maxsize=512)
def _cached_words(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(fold(text)))


def terms(text: str) -> list[str]:
    """Folded, stemmed tokens without stopwords: what retrieval scores."""
    return [_stem(t) for t in words(text) if t not in STOPWORDS]


@attrs.frozen(kw_only=True)
class Section:
    """The text under one heading (without its subsections) and the headings above it."""

    source: str
    path: tuple[str, ...]
    body: str

    @property
    def title(self) -> str:
        return self.path[-1]

    @property
    def ref(self) -> str:
        """``source › heading › heading``: how a reply or prompt names where a fact comes from."""
        return " › ".join((self.source, *self.path[1:])) if len(self.path) > 1 else self.source


@attrs.frozen(kw_only=True)
class Hit:
    section: Section
    score: float
    coverage: float = 1.0


def split_sections(source: str, markdown: str) -> list[Section]:
    """Split one Markdown file at its headings; empty sections (only subsections) are dropped."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        text = "\n".join(body).strip()
        if text and path:
            sections.append(Section(source=source, path=tuple(t for _, t in path), body=text))
        elif text:
            sections.append(Section(source=source, path=(source,), body=text))
        body.clear()

    for line in markdown.splitlines():
        match = _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level = len(match.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, match.group(2)))
    flush()
    return sections


class KnowledgeBase:
    """Sections indexed for BM25 (k1=1.5, b=0.5: long sections are not penalised much); headings count twice."""

    K1 = 1.5
    B = 0.5

    def __init__(
        self, sections: Sequence[Section], *, synonyms: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.sections: tuple[Section, ...] = tuple(sections)
        self._synonyms: dict[str, tuple[str, ...]] = {}
        for word, expansions in (synonyms or {}).items():
            key = _stem(fold(word))
            self._synonyms[key] = tuple(t for e in expansions for t in terms(e))
        self._docs: list[Counter[str]] = []
        for section in self.sections:
            heading_terms = [t for h in section.path for t in terms(h)]
            self._docs.append(Counter(terms(section.body) + heading_terms * 2))
        self._lengths = [sum(doc.values()) for doc in self._docs]
        self._avg_length = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        df: Counter[str] = Counter()
        for doc in self._docs:
            df.update(doc.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        # term -> [(section index, BM25 weight of the term in that section)]
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, (doc, length) in enumerate(zip(self._docs, self._lengths, strict=True)):
            norm = self.K1 * (1 - self.B + self.B * length / self._avg_length)
            for term, tf in doc.items():
                weight = self._idf[term] * tf * (self.K1 + 1) / (tf + norm)
                self._postings.setdefault(term, []).append((i, weight))

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(s.source for s in self.sections)

    def query_groups(self, query: str) -> list[tuple[str, ...]]:
        """One group per query word: the word's term and its synonyms (English reaches French).

        Stopwords count only through their synonyms (``heure`` is not a stopword, ``when``
        is, and neither says much on its own).
        """
        groups: dict[str, tuple[str, ...]] = {}
        for word in words(query):
            term = _stem(word)
            expansions = self._synonyms.get(term, ())
            if word in STOPWORDS:
                if expansions:
                    groups.setdefault(term, expansions)
            else:
                groups.setdefault(term, (term, *expansions))
        return list(groups.values())

    def query_terms(self, query: str) -> list[str]:
        """Every term a search for ``query`` scores."""
        return list(dict.fromkeys(t for group in self.query_groups(query) for t in group))

    def search(
        self,
        query: str,
        *,
        limit: int = 3,
        sources: Collection[str] | None = None,
        min_score: float = 1.0,
        min_coverage: float = 0.0,
    ) -> list[Hit]:
        """Best sections for ``query``, best first.

        ``sources`` restricts to some files; ``min_coverage`` is the share of the
        query's words (or their synonyms) a section must contain.
        """
        groups = self.query_groups(query)
        if not groups:
            return []
        scores: dict[int, float] = {}
        covered: dict[int, int] = {}
        seen_terms: set[str] = set()
        for group in groups:
            in_group: set[int] = set()
            for term in group:
                for i, weight in self._postings.get(term, ()):
                    in_group.add(i)
                    if term not in seen_terms:
                        scores[i] = scores.get(i, 0.0) + weight
                seen_terms.add(term)
            for i in in_group:
                covered[i] = covered.get(i, 0) + 1
        n = len(groups)
        ranked = [
            (-score, i)
            for i, score in scores.items()
            if score >= min_score
            and covered[i] / n >= min_coverage
            and (sources is None or self.sections[i].source in sources)
        ]
        # Best first, ties in file order; only the kept few become Hits.
        return [
            Hit(section=self.sections[i], score=-negative, coverage=covered[i] / n)
            for negative, i in heapq.nsmallest(limit, ranked)
        ]


def _load_synonyms(path: Path) -> dict[str, list[str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KnowledgeError(f"{path}: cannot read the synonym table: {exc}") from None
    table = data.get("synonyms", {})
    if not isinstance(table, dict):
        raise KnowledgeError(f"{path}: [synonyms] must be a table of word = [words]")
    result: dict[str, list[str]] = {}
    for word, expansions in table.items():
        if not isinstance(expansions, list) or not all(isinstance(e, str) for e in expansions):
            raise KnowledgeError(f"{path}: synonyms.{word} must be a list of strings")
        result[word] = expansions
    return result


def load_knowledge(config_dir: Path) -> KnowledgeBase:
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
    return KnowledgeBase(sections, synonyms=synonyms)


def excerpt(section: Section, query_terms: Iterable[str], *, max_chars: int = 700) -> str:
    """The section's text, or its lines that mention the query when it is long."""
    if len(section.body) <= max_chars:
        return section.body
    wanted = set(query_terms)
    lines = [line for line in section.body.splitlines() if wanted & set(terms(line))]
    text = "\n".join(lines) if lines else section.body
    return text if len(text) <= max_chars else text[: max_chars - 1].rsplit(" ", 1)[0] + "…"
