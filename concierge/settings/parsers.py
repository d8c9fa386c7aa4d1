"""Value parsers for settings: each turns one variable's text into a value or says what is wrong.

A parser raises ``ValueError`` with a message fit for an operator; the loader adds
the variable's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from concierge.settings.models import ApiKey, JwtKey


def text(value: str) -> str:
    return value


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def number(
    *, minimum: float = 0.0, strict: bool = False, maximum: float | None = None
) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {value!r}")
        if number < minimum or (strict and number == minimum):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            raise ValueError(f"must be {bound}, got {value!r}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum:g}, got {value!r}")
        return number

    return parse


def integer(*, minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}, got {number}")
        return number

    return parse


def choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


def url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(
                f"expected a URL starting with {' or '.join(s + '://' for s in schemes)} and a host"
            )
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError("the URL's port is not a number between 0 and 65535") from None
        return value.strip().rstrip("/")

    return parse


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def provider_names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if not names:
        raise ValueError("name at least one provider, e.g. offline")
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a provider name (letters, digits, underscore)")
    if len(set(names)) != len(names):
        raise ValueError("a provider is named twice")
    return names


_KEY_ALIAS = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def parse_api_keys(value: str) -> tuple[ApiKey, ...]:
    """``key1,key2`` or ``alias=key,alias2=key2``; unnamed keys get ``#1``, ``#2`` aliases."""
    keys: list[ApiKey] = []
    for position, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            raise ValueError(f"key #{position} is empty (a stray comma?)")
        alias, sep, secret = item.partition("=")
        if sep and _KEY_ALIAS.match(alias) and secret:
            keys.append(ApiKey(alias=alias, secret=secret.strip()))
        elif sep and not secret:
            raise ValueError(f"key #{position} has an alias but no key after '='")
        else:
            if any(c.isspace() for c in item):
                raise ValueError(f"key #{position} contains white space")
            keys.append(ApiKey(alias=f"#{position}", secret=item))
    aliases = [k.alias for k in keys]
    if len(set(aliases)) != len(aliases):
        raise ValueError("two keys share an alias")
    return tuple(keys)


JWT_MIN_KEY_BYTES = 32
"""HS256 keys at least as long as the hash (RFC 7518 §3.2): 256 bits."""
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def jwt_keys(value: str) -> tuple[JwtKey, ...]:
    """``kid=secret,kid2=secret2``: the first signs new tokens, every one verifies."""
    keys: list[JwtKey] = []
    for position, item in enumerate(value.split(","), start=1):
        kid, sep, secret = item.strip().partition("=")
        if not sep or not _KID.match(kid):
            raise ValueError(
                f"key #{position}: expected kid=secret, the kid 1 to 40 of A-Z a-z 0-9 _ . -"
            )
        raw = secret.strip().encode()
        if len(raw) < JWT_MIN_KEY_BYTES:
            raise ValueError(
                f"key {kid!r} is {len(raw)} bytes: each key needs at least {JWT_MIN_KEY_BYTES} "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        keys.append(JwtKey(kid=kid, secret=raw))
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise ValueError("two keys share a kid")
    return tuple(keys)
