"""LLM Markdown → Telegram HTML parts: escape everything, keep tags balanced, fit 4096 UTF-16 units.

Telegram's HTML mode is chosen over MarkdownV2 because only ``& < >`` need escaping,
so a reply the model wrote sloppily still renders. The text becomes a list of runs
(text plus the stack of styles around it); any slice of runs renders to balanced
HTML, so splitting chooses cut points in the runs and each part closes and reopens
the tags it crosses. Parts are measured as the HTML source in UTF-16 code units, a
bound on Telegram's own count (which excludes the tags), so the plain-text fallback
of a part fits as well. Cut points are paragraph, then line, then sentence, then word
boundaries, then single code points. Hand-written (about 300 lines) because the
available converters produce MarkdownV2 or do not split.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import attrs

TELEGRAM_MAX_UNITS = 4096


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (astral characters count two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@attrs.frozen
class Style:
    """One HTML element around a run: ``b``, ``i``, ``s``, ``code``, ``pre``, ``a``, ``blockquote``."""

    tag: str
    attr: str | None = None  # href of ``a``; language of ``code`` inside ``pre``

    def open(self) -> str:
        if self.tag == "a" and self.attr is not None:
            return f'<a href="{html.escape(self.attr, quote=True)}">'
        if self.tag == "code" and self.attr is not None:
            return f'<code class="language-{self.attr}">'
        return f"<{self.tag}>"

    def close(self) -> str:
        return f"</{self.tag}>"


@attrs.frozen
class Run:
    text: str
    styles: tuple[Style, ...] = ()


@attrs.frozen(kw_only=True)
class Part:
    """One message to send: its HTML and the same text without markup (the fallback)."""

    html: str
    plain: str


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- inline Markdown ---------------------------------------------------------------------
_SAFE_SCHEMES = ("http://", "https://", "tg://", "mailto:")
_PUNCT = r"!\"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"
_WORD = re.compile(r"\w")


def _is_word(ch: str) -> bool:
    return bool(ch) and bool(_WORD.match(ch))


def _find_closer(text: str, delim: str, start: int) -> int:
    """Index of a closing ``delim`` after ``start`` that follows a non-space, or -1."""
    pos = start
    while True:
        pos = text.find(delim, pos)
        if pos < 0:
            return -1
        before = text[pos - 1] if pos > 0 else " "
        after = text[pos + len(delim)] if pos + len(delim) < len(text) else " "
        # '_' and '*' close only at a word boundary, so snake_case stays literal;
        # a single '*' right before another one is part of a '**', not a closer
        if (
            pos > start
            and not before.isspace()
            and (delim not in ("_", "__", "*") or not _is_word(after))
            and not (len(delim) == 1 and after == delim)
        ):
            return pos
        pos += 1


def _inline(text: str, styles: tuple[Style, ...], *, links: bool = True) -> list[Run]:
    """Parse emphasis, code spans and links; anything unmatched stays literal text."""
    runs: list[Run] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            runs.append(Run("".join(buf), styles))
            buf.clear()

    def push(style: Style) -> tuple[Style, ...]:
        return styles if any(s.tag == style.tag for s in styles) else (*styles, style)

    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in _PUNCT:
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "`":
            code, after = _code_span(text, i, styles)
            if code is None:
                buf.append(text[i:after])
            else:
                flush()
                runs.append(code)
            i = after
            continue
        if ch == "[" and links:
            match = re.match(r"\[([^\[\]\n]+)\]\(([^()\s]+)\)", text[i:])
            if match:
                flush()
                label, url = match.group(1), match.group(2)
                if url.lower().startswith(_SAFE_SCHEMES):
                    runs.extend(_inline(label, push(Style("a", url)), links=False))
                else:
                    runs.extend(_inline(label, styles, links=False))
                i += match.end()
                continue
        emphasis = _emphasis(text, i) if ch in "*_~" else None
        if emphasis is None:
            buf.append(ch)
            i += 1
            continue
        delim, tag, close = emphasis
        flush()
        runs.extend(_inline(text[i + len(delim) : close], push(Style(tag)), links=links))
        i = close + len(delim)
    flush()
    return runs


def _code_span(text: str, i: int, styles: tuple[Style, ...]) -> tuple[Run | None, int]:
    """The code span whose backticks start at ``i``, and where it ends (``None`` if unclosed)."""
    ticks = len(text[i:]) - len(text[i:].lstrip("`"))
    end = text.find("`" * ticks, i + ticks)
    if end <= i + ticks:
        return None, i + ticks
    content = text[i + ticks : end]
    if content.strip(" ") and content.startswith(" ") and content.endswith(" "):
        content = content.strip(" ")
    # code contains no other entity and only a blockquote may contain it
    outer = tuple(s for s in styles if s.tag == "blockquote")
    return Run(content, (*outer, Style("code"))), end + ticks


def _emphasis(text: str, i: int) -> tuple[str, str, int] | None:
    """The emphasis opening at ``i``: its delimiter, tag and closer's position, if it closes."""
    n = len(text)
    for delim, tag in (("**", "b"), ("__", "b"), ("~~", "s"), ("*", "i"), ("_", "i")):
        if not text.startswith(delim, i):
            continue
        after = text[i + len(delim)] if i + len(delim) < n else " "
        before = text[i - 1] if i > 0 else " "
        if after.isspace() or (len(delim) == 1 and after == delim):
            continue
        if delim in ("_", "__", "*") and _is_word(before):
            continue  # snake_case, 2*3*4: intraword markers stay literal
        close = _find_closer(text, delim, i + len(delim))
        if close >= 0:
            return delim, tag, close
    return None


# -- block Markdown ----------------------------------------------------------------------
_FENCE = re.compile(r"^\s{0,3}(```|~~~)\s*([A-Za-z0-9_+#-]{0,32})\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")


def markdown_to_runs(text: str) -> list[Run]:
    """Turn a model's Markdown into styled runs (the input of ``render`` and ``split``)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    runs: list[Run] = []
    i = 0
    blank = False
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            marker, lang = fence.group(1), fence.group(2)
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end)
            code = Style("code", lang) if lang else Style("code")
            runs.append(Run("\n".join(body) or " ", (Style("pre"), code)))
            runs.append(Run("\n"))
            blank = False
            continue
        if not line.strip():
            if not blank and runs:
                runs.append(Run("\n"))
            blank = True
            i += 1
            continue
        blank = False
        quote = _QUOTE.match(line)
        if quote:
            quoted: list[str] = []
            while i < len(lines) and (m := _QUOTE.match(lines[i])):
                quoted.append(m.group(1))
                i += 1
            runs.extend(_inline("\n".join(quoted), (Style("blockquote"),)))
            runs.append(Run("\n"))
            continue
        if heading := _HEADING.match(line):
            runs.extend(_inline(heading.group(1), (Style("b"),)))
        elif _RULE.match(line):
            runs.append(Run("———"))
        elif bullet := _BULLET.match(line):
            runs.append(Run(f"{bullet.group(1)}• "))
            runs.extend(_inline(bullet.group(2), ()))
        else:
            runs.extend(_inline(line, ()))
        runs.append(Run("\n"))
        i += 1
    return _trim(runs)


# -- rendering ---------------------------------------------------------------------------
def _common(a: tuple[Style, ...], b: tuple[Style, ...]) -> int:
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    return k


class _Meter:
    """Incremental HTML length of a run sequence, including the tags that close it."""

    def __init__(self) -> None:
        self.length = 0
        self.stack: tuple[Style, ...] = ()

    def _step(self, run: Run) -> tuple[int, tuple[Style, ...]]:
        keep = _common(self.stack, run.styles)
        cost = sum(len(s.close()) for s in self.stack[keep:])
        cost += sum(utf16_len(s.open()) for s in run.styles[keep:])
        cost += utf16_len(_escape(run.text))
        return cost, run.styles

    def add(self, runs: Sequence[Run]) -> None:
        for run in runs:
            cost, self.stack = self._step(run)
            self.length += cost

    def total_with(self, runs: Sequence[Run]) -> int:
        length, stack = self.length, self.stack
        for run in runs:
            keep = _common(stack, run.styles)
            length += sum(len(s.close()) for s in stack[keep:])
            length += sum(utf16_len(s.open()) for s in run.styles[keep:])
            length += utf16_len(_escape(run.text))
            stack = run.styles
        return length + sum(len(s.close()) for s in stack)


def render(runs: Sequence[Run]) -> str:
    """Balanced Telegram HTML for ``runs``."""
    out: list[str] = []
    stack: tuple[Style, ...] = ()
    for run in runs:
        if not run.text:
            continue
        keep = _common(stack, run.styles)
        out.extend(s.close() for s in reversed(stack[keep:]))
        out.extend(s.open() for s in run.styles[keep:])
        out.append(_escape(run.text))
        stack = run.styles
    out.extend(s.close() for s in reversed(stack))
    return "".join(out)


def plain(runs: Sequence[Run]) -> str:
    return "".join(run.text for run in runs)


# -- splitting ---------------------------------------------------------------------------
_SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines
    re.compile(r"(?<=[.!?…;:])[\"'»”)\]]*\s+"),  # sentences
    re.compile(r"\s+"),  # words
)


def _cut(runs: Sequence[Run], positions: Sequence[int]) -> list[list[Run]]:
    """Slice ``runs`` at increasing character offsets of their joined text."""
    pieces: list[list[Run]] = [[]]
    offset = 0
    k = 0
    for run in runs:
        start = 0
        while k < len(positions) and positions[k] < offset + len(run.text):
            at = positions[k] - offset
            k += 1
            if at > start:
                pieces[-1].append(Run(run.text[start:at], run.styles))
            pieces.append([])
            start = max(start, at)
        if start < len(run.text):
            pieces[-1].append(Run(run.text[start:], run.styles))
        offset += len(run.text)
    return [p for p in pieces if p]


def _pieces(runs: Sequence[Run], level: int) -> list[list[Run]]:
    text = plain(runs)
    if level >= len(_SEPARATORS):
        return _cut(runs, range(1, len(text)))
    positions = [m.end() for m in _SEPARATORS[level].finditer(text) if 0 < m.end() < len(text)]
    return _cut(runs, positions)


def _trim(runs: Sequence[Run]) -> list[Run]:
    out = [r for r in runs if r.text]
    while out and not out[0].text.strip():
        out.pop(0)
    while out and not out[-1].text.strip():
        out.pop()
    if out:
        out[0] = Run(out[0].text.lstrip(), out[0].styles)
        out[-1] = Run(out[-1].text.rstrip(), out[-1].styles)
    return out


def _pack(runs: Sequence[Run], limit: int, level: int) -> list[list[Run]]:
    parts: list[list[Run]] = []
    current: list[Run] = []
    meter = _Meter()
    for piece in _pieces(runs, level):
        if meter.total_with(piece) <= limit:
            current.extend(piece)
            meter.add(piece)
            continue
        if current:
            parts.append(current)
        current, meter = [], _Meter()
        if meter.total_with(piece) <= limit:
            current.extend(piece)
            meter.add(piece)
            continue
        if level >= len(_SEPARATORS):
            raise ValueError(
                f"a limit of {limit} UTF-16 units cannot hold one character and its tags"
            )
        sub = _pack(piece, limit, level + 1)
        parts.extend(sub[:-1])
        current = sub[-1]
        meter.add(current)
    if current:
        parts.append(current)
    return parts


def split_runs(runs: Sequence[Run], *, limit: int = TELEGRAM_MAX_UNITS) -> list[Part]:
    """Cut runs into parts whose HTML fits ``limit`` UTF-16 units; empty parts are dropped."""
    if limit < 64:
        raise ValueError(f"limit must be at least 64 UTF-16 units, got {limit}")
    parts = []
    for chunk in _pack(_trim(runs), limit, 0):
        trimmed = _trim(chunk)
        if trimmed:
            parts.append(Part(html=render(trimmed), plain=plain(trimmed)))
    return parts


def format_reply(text: str, *, limit: int = TELEGRAM_MAX_UNITS) -> list[Part]:
    """A model's Markdown reply as ordered Telegram HTML parts (at least one when text is not blank)."""
    return split_runs(markdown_to_runs(text), limit=limit)
