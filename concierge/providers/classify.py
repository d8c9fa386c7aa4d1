"""Shared pieces of error classification: HTTP status → ``Outcome``, retry hints, GLM codes.

Each adapter reads its own wire format and calls these so that the same HTTP fact
(a 402, a ``Retry-After``) means the same thing for every provider.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from concierge.protocol import Outcome

__all__ = [
    "error_detail",
    "glm_outcome",
    "is_spend_limit_message",
    "outcome_for_status",
    "parse_duration",
    "retry_after_from_headers",
    "seconds_until_pacific_midnight",
]


def outcome_for_status(status: int) -> Outcome:
    """What an HTTP status alone says, before any body is read.

    401/402/403 disable the key; 429 throttles it; 408, 409, 5xx (and Anthropic's 529)
    are the provider's trouble; any other 4xx is a problem with this request.
    """
    if 200 <= status < 300:
        return Outcome.OK
    if status in (401, 402, 403):
        return Outcome.DEAD_KEY
    if status == 429:
        return Outcome.THROTTLED
    if status in (408, 409) or status >= 500:
        return Outcome.TRANSIENT
    return Outcome.REQUEST_ERROR


# z.ai / bigmodel business codes (docs.z.ai/api-reference/api-code), which override the
# HTTP status: a 429 carries "balance exhausted" (1113) as well as real rate limits.
_GLM_RANGES: tuple[tuple[int, int, Outcome], ...] = (
    (1000, 1004, Outcome.DEAD_KEY),  # authentication
    (1110, 1121, Outcome.DEAD_KEY),  # account: arrears (1113), locked, ...
    (1210, 1215, Outcome.REQUEST_ERROR),  # bad parameters, unknown model
    (1261, 1261, Outcome.REQUEST_ERROR),  # prompt too long
    (1301, 1301, Outcome.REQUEST_ERROR),  # unsafe content
    (1302, 1304, Outcome.THROTTLED),  # concurrency, frequency, daily quota
    (1305, 1305, Outcome.TRANSIENT),  # traffic limited / model overloaded
    (1308, 1308, Outcome.THROTTLED),  # usage cap until next_flush_time
    (1309, 1309, Outcome.DEAD_KEY),  # coding plan expired
    (1310, 1310, Outcome.THROTTLED),  # weekly / monthly cap
    (1312, 1312, Outcome.TRANSIENT),  # model overloaded
    (1313, 1313, Outcome.THROTTLED),  # fair-use throttling
)


def glm_outcome(code: object) -> Outcome | None:
    """The outcome of a GLM business code (``"1113"`` or ``1113``), ``None`` if not one."""
    if isinstance(code, bool):
        return None
    if isinstance(code, str):
        if not code.strip().isdigit():
            return None
        code = int(code)
    if not isinstance(code, int) or code < 1000:
        return None
    for low, high, outcome in _GLM_RANGES:
        if low <= code <= high:
            return outcome
    return None


_SPEND_LIMIT = re.compile(
    r"credit balance|spend(?:ing)? limit|usage limit|billing|purchase credits|"
    r"insufficient (?:balance|credit|funds)|quota exceeded for (?:your|this) (?:account|organization)",
    re.IGNORECASE,
)


def is_spend_limit_message(message: str) -> bool:
    """Whether a 400's message says the account ran out of money rather than the request was bad."""
    return bool(_SPEND_LIMIT.search(message))


def error_detail(status: int | None, kind: object, message: object, *, limit: int = 200) -> str:
    """A short, log-safe description: status, the API's error type/code and its message."""
    parts = [str(p) for p in (status, kind) if p not in (None, "")]
    text = " ".join(str(message).split()) if message else ""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return ": ".join(x for x in (" ".join(parts), text) if x) or "no detail"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: object) -> float | None:
    """Seconds in ``"7s"``, ``"36.4s"``, ``"250ms"``, ``"3"`` (protobuf durations included)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _clean(float(text))
    if not isinstance(text, str):
        return None
    match = _DURATION.match(text)
    if match is None:
        return None
    return _clean(float(match.group(1)) * _UNIT_S[match.group(2)])


def _clean(seconds: float) -> float | None:
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _parse_instant(value: str) -> datetime | None:
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _seconds_until(value: str, now: float) -> float | None:
    instant = _parse_instant(value)
    if instant is None:
        return None
    return max(0.0, instant.timestamp() - now)


def _epoch_or_delta(value: str, now: float) -> float | None:
    """``X-RateLimit-Reset``: OpenRouter sends epoch milliseconds; others epoch seconds or a delta."""
    try:
        number = float(value.strip())
    except ValueError:
        return _seconds_until(value, now)
    if math.isnan(number) or math.isinf(number):
        return None
    if number > 1e11:
        return max(0.0, number / 1000.0 - now)
    if number > 1e9:
        return max(0.0, number - now)
    return max(0.0, number)


_ANTHROPIC_FAMILIES = ("requests", "tokens", "input-tokens", "output-tokens")


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """The server's "come back in N seconds", from whichever header it used.

    Order: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date),
    ``anthropic-ratelimit-*-reset`` (RFC 3339; the exhausted limits first), then
    ``x-ratelimit-reset`` (epoch ms as OpenRouter sends it, epoch s, or seconds).
    ``now`` is the wall-clock epoch (tests pass one).
    """
    wall = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None and (
        value := parse_duration(ms)
    ) is not None:
        return value / 1000.0
    if (ra := lowered.get("retry-after")) is not None:
        value = parse_duration(ra)
        if value is None:
            value = _seconds_until(ra, wall)
        if value is not None:
            return value
    resets: list[tuple[bool, float]] = []
    for family in _ANTHROPIC_FAMILIES:
        reset = lowered.get(f"anthropic-ratelimit-{family}-reset")
        if reset is None or (delta := _seconds_until(reset, wall)) is None:
            continue
        spent = lowered.get(f"anthropic-ratelimit-{family}-remaining", "").strip() == "0"
        resets.append((spent, delta))
    if resets:
        exhausted = [d for spent, d in resets if spent]
        return max(exhausted) if exhausted else min(d for _, d in resets)
    if (reset := lowered.get("x-ratelimit-reset")) is not None:
        return _epoch_or_delta(reset, wall)
    return None


def seconds_until_pacific_midnight(*, now: float | None = None) -> float:
    """Time until Gemini's per-day quotas reset (midnight in America/Los_Angeles)."""
    wall = time.time() if now is None else now
    try:
        zone: tzinfo = ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # no tz database: Pacific standard time is close enough
        zone = timezone(timedelta(hours=-8))
    local = datetime.fromtimestamp(wall, zone)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, midnight.timestamp() - wall)
