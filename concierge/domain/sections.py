"""The knowledge base's units: a Markdown file's sections, and their passages.

A section is the text under one heading; a passage is one of its sentences (a list
item, or a sentence of a paragraph), the size of an answer. A passage keeps its
section, whose headings say what it is about ("Le samedi de 16h00 à 17h30" is
about confessions), and its label when it starts with one ("Curé : …").
"""

from __future__ import annotations

import re

import attrs

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
# A sentence ends at . ! ? followed by a space and a capital, a digit or an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÀ-ÖØ-Ý0-9«\"(])")
_LABEL = re.compile(r"^([^:;,.()«»]{2,60}?)\s*:\s+\S")
MAX_LABEL_WORDS = 4
"""A label ("Téléphone", "Coordinatrice de la catéchèse") is a few words before a colon."""


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
class Passage:
    """One sentence or list item of a section, as written (list marker removed)."""

    section: Section
    text: str
    label: str = ""


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


def split_passages(section: Section) -> list[Passage]:
    """The section's list items and paragraph sentences, in order.

    A unit that ends with a colon introduces the next one and stays with it, and a
    sentence is never cut inside « guillemets » (a prayer stays whole).
    """
    units: list[str] = []
    for block in _blocks(section.body):
        units.extend(_sentences(block))
    merged: list[str] = []
    for unit in units:
        if merged and merged[-1].endswith(":"):
            merged[-1] = f"{merged[-1]} {unit}"
        else:
            merged.append(unit)
    return [Passage(section=section, text=text, label=_label(text)) for text in merged]


def _blocks(body: str) -> list[str]:
    """List items one by one; the lines of a paragraph joined."""
    blocks: list[str] = []
    paragraph: list[str] = []
    for raw in body.splitlines():
        line = raw.strip()
        item = _ITEM.match(raw)
        if not line or item is not None:
            if paragraph:
                blocks.append(" ".join(paragraph))
                paragraph = []
            if item is not None:
                blocks.append(raw[item.end() :].strip())
            continue
        paragraph.append(line)
    if paragraph:
        blocks.append(" ".join(paragraph))
    return [b for b in blocks if b]


def _sentences(block: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(block):
        before = block[start : match.start()]
        if before.count("«") > before.count("»"):  # inside a quotation: keep going
            continue
        sentences.append(before.strip())
        start = match.end()
    sentences.append(block[start:].strip())
    return [s for s in sentences if s]


def _label(text: str) -> str:
    match = _LABEL.match(text)
    if match is None or len(match.group(1).split()) > MAX_LABEL_WORDS:
        return ""
    return match.group(1).strip()
