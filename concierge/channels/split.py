"""Split a long reply into readable parts: at paragraph, then line, then sentence, then word ends.

Platform-neutral: the caller gives the limit and how length is measured (code points
unless told otherwise; WhatsApp counts them).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["split_text"]

# A sentence ends with . ! ? or … (optionally followed by closing quotes/brackets) and white space.
_SENTENCE_END = re.compile(r"[.!?…][\"'»”’)\]]*\s+")
_WHITESPACE = re.compile(r"\s+")
# A boundary earlier than this share of the limit makes a part too short to be worth it.
_MIN_SHARE = 0.3


def split_text(text: str, *, limit: int, measure: Callable[[str], int] = len) -> tuple[str, ...]:
    """Cut ``text`` into parts of at most ``limit`` (as ``measure`` counts), in order.

    Each cut goes at the last paragraph break that leaves a part of at least 30 % of
    the limit, else the last line break, sentence end, or white space; a single word
    longer than the limit is cut hard. Parts are stripped; blank text gives no parts.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    parts: list[str] = []
    rest = text.strip()
    while rest:
        if measure(rest) <= limit:
            parts.append(rest)
            break
        window = _fitting_prefix(rest, limit, measure)
        cut = _best_cut(rest[:window], minimum=max(1, int(window * _MIN_SHARE)))
        part = rest[:cut].rstrip()
        if not part:  # only white space fits: cut hard
            cut = window
            part = rest[:cut]
        parts.append(part)
        rest = rest[cut:].lstrip()
    return tuple(parts)


def _fitting_prefix(text: str, limit: int, measure: Callable[[str], int]) -> int:
    """The largest ``n`` with ``measure(text[:n]) <= limit`` (at least 1: progress is guaranteed)."""
    if measure is len:
        return max(1, min(limit, len(text)))
    low, high = 0, min(len(text), limit)
    while low < high:
        mid = (low + high + 1) // 2
        if measure(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return max(1, low)


def _best_cut(window: str, *, minimum: int) -> int:
    """Where to end the part inside ``window``: an index just after a natural boundary."""
    candidates: list[int | None] = [
        _last_end(window, "\n\n"),
        _last_end(window, "\n"),
        _last_match_end(_SENTENCE_END, window),
        _last_match_end(_WHITESPACE, window),
    ]
    for cut in candidates:
        if cut is not None and cut >= minimum:
            return cut
    for cut in candidates:  # any boundary beats cutting a word
        if cut is not None and cut > 0:
            return cut
    return len(window)


def _last_end(window: str, separator: str) -> int | None:
    index = window.rfind(separator)
    return None if index <= 0 else index + len(separator)


def _last_match_end(pattern: re.Pattern[str], window: str) -> int | None:
    last = None
    for match in pattern.finditer(window):
        if match.start() > 0:
            last = match.end()
    return last
