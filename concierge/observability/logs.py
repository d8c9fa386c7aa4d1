"""Structured logging: JSON lines for machines, a console view for people, secrets masked.

Every event gets an ISO-8601 UTC timestamp, its level and whatever context is
bound (``correlation_id`` above all). Tracebacks are rendered as data, exception
groups included, without local variables: locals carry message texts and keys.
Redaction is a safety net applied to every string in every event, not a licence
to log secrets.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

_SENSITIVE_FIELD = re.compile(
    r"(?i)(^|_)(api_?keys?|token|secret|password|passwd|authorization|hmac(_key)?|cookie)$"
)

# Order matters: the most specific shapes first.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JSON Web Tokens: three base64url segments, the first two starting with '{"'.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[jwt]"),
    # Telegram bot tokens, also inside Bot API URLs (/bot<token>/sendMessage).
    (re.compile(r"(?<![0-9])\d{5,12}:[A-Za-z0-9_-]{30,}"), "[bot-token]"),
    # Provider keys: Anthropic, OpenAI/OpenRouter (sk-...), Google (AIza...).
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "[api-key]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), "[api-key]"),
    # Bearer credentials in headers that ended up in a message.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [credential]"),
    # Passwords in DSNs and URLs: scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@", re.IGNORECASE), r"\1:***@"),
    # key=... / api_key=... in query strings.
    (re.compile(r"(?i)([?&](?:key|api_key|token|secret)=)[^&\s]+"), r"\1[redacted]"),
    # WhatsApp ids carry the phone number (or the hidden id) wherever they stand: a user key
    # waha:221770000000@c.us, a message id false_221770000000@c.us_3EB0..., a device
    # suffix 221770000000:12@s.whatsapp.net, a hidden user 123456789012345@lid.
    (
        re.compile(
            r"(?<!\d)(\d{2})\d{5,13}(\d{2})(?=(?::\d{1,5})?@(?:c\.us|s\.whatsapp\.net|lid)(?![A-Za-z.]))"
        ),
        r"\1*****\2",
    ),
    # International phone numbers: +221 77 123 45 67, +33 6 12 34 56 78, +221770000000
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\d){6,13}\b"), "[phone]"),
    # National formats with spaces: 06 12 34 56 78, 77 123 45 67, 33 800 00 00
    (re.compile(r"(?<![\w:.-])0?\d{2}(?: \d{2,3}){3,4}(?![\w:.-])"), "[phone]"),
)


def _scoped(pattern: re.Pattern[str]) -> str:
    """``pattern`` as a group that keeps its own case rule inside a larger alternation."""
    text = pattern.pattern.removeprefix("(?i)")
    case = "i" if pattern.flags & re.IGNORECASE or text != pattern.pattern else ""
    return f"(?{case}:{text})" if case else f"(?:{text})"


# One pass tells whether a string needs any of the substitutions at all (most do not).
_ANY_PATTERN = re.compile("|".join(_scoped(pattern) for pattern, _ in _PATTERNS))


_MEMO_CHARS = 64


@functools.lru_cache(maxsize=1024)
def _sensitive_field(key: str) -> bool:
    return _SENSITIVE_FIELD.search(key) is not None


class Redactor:
    """Mask secrets and phone numbers in every string value of an event.

    Known secrets (the configured keys and tokens) are replaced wherever they
    appear, whatever their shape; fields whose name says they hold a secret are
    replaced whole. Most values hold nothing to mask, so one combined search
    decides before any substitution runs: an event costs a few microseconds, not
    one regex pass per pattern per value.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(s) for s in known)) if known else None
        # Event names, levels, providers, service types: the same short strings again and again.
        self._short = functools.lru_cache(maxsize=4096)(self._redact)

    def redact_text(self, text: str) -> str:
        return self._short(text) if len(text) <= _MEMO_CHARS else self._redact(text)

    def _redact(self, text: str) -> str:
        if self._known is not None and self._known.search(text) is not None:
            text = self._known.sub(REDACTED, text)
        if _ANY_PATTERN.search(text) is None:
            return text
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def _value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if depth > 8:
            return value
        if isinstance(value, Mapping):
            return {k: self._field(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._value(v, depth + 1) for v in value)
        return value

    def _field(self, key: str, value: Any, depth: int = 0) -> Any:
        if _sensitive_field(key) and isinstance(value, str | bytes) and value:
            return REDACTED
        return self._value(value, depth)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if key in ("timestamp", "level") or isinstance(value, int | float | None):
                continue  # bool is an int: nothing to mask in any of them
            event_dict[key] = self._field(key, value)
        return event_dict


def _drop_color_message(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def shared_processors(redactor: Redactor) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
        redactor,
    ]


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    cache_loggers: bool = False,
) -> None:
    """Set up structlog (and route stdlib ``logging`` through it) for the whole process.

    ``cache_loggers``: each module's logger binds once instead of at every call (a
    few microseconds per line, filtered or not). For processes that configure
    logging once (the commands); tests that swap the configuration leave it off.
    """
    out = stream if stream is not None else sys.stdout
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    redactor = Redactor(secrets)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    processors = shared_processors(redactor)
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(default=_json_default)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        # The console renderer wants the raw exc_info, not the dict traceback.
        processors = [
            p for p in processors if not isinstance(p, structlog.processors.ExceptionRenderer)
        ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache_loggers,
    )
    _route_stdlib(numeric, processors, renderer, out)


def _route_stdlib(
    level: int, processors: list[Processor], renderer: Processor, out: TextIO
) -> None:
    """Hypercorn, httpx and asyncpg log through stdlib ``logging``: give them the same shape."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO) if level > logging.DEBUG else logging.DEBUG)
    # Access logs say nothing our own request metrics do not; httpx logs every call at INFO.
    for noisy in ("httpx", "httpcore", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _json_default(value: object) -> object:
    return repr(value)
