"""Operator API tokens: HS256 JWTs issued by ``concierge token issue``, checked per RFC 8725.

PyJWT does the cryptography and the registered claims; on top of it the algorithm is
pinned (HS256, from the header, before any key is chosen), the header's ``typ`` must
be ``at+jwt`` (RFC 8725 §3.11: an access token is not some other JWT), its ``kid`` must
name a configured key, and ``exp``, ``iat``, ``iss``, ``aud`` and ``sub`` are required,
with a small leeway for clocks. Keys are at least 32 bytes (checked when settings load,
and again by PyJWT). A refused token says nothing about why to the caller; the reason
is logged.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

import attrs
import jwt
import structlog

from concierge.settings import ApiSettings, JwtKey

log = structlog.get_logger(__name__)

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"
LEEWAY_S = 30
MAX_TTL_S = 31 * 24 * 3600
"""Tokens cannot be revoked one by one (rotate the key for that): a month at most."""
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")


class Role(enum.StrEnum):
    """``staff``: handoffs and the conversations behind them; ``admin``: also users,
    erasure, provider keys and the audit trail."""

    STAFF = "staff"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return self is Role.ADMIN or needed is Role.STAFF


@attrs.frozen(kw_only=True)
class Principal:
    """Who a valid token speaks for."""

    subject: str
    role: Role
    expires_at: datetime
    token_id: str


class TokenRefused(Exception):
    """The token is not acceptable; ``reason`` is for the log, never for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier:
    """Checks bearer tokens against the configured keys, issuer and audience."""

    def __init__(self, settings: ApiSettings) -> None:
        if not settings.keys:
            raise ValueError("the operator API needs CONCIERGE_JWT_KEYS")
        self._keys = {k.kid: k.secret for k in settings.keys}
        self._issuer = settings.issuer
        self._audience = settings.audience

    def verify(self, token: str) -> Principal:
        """The token's principal; raises ``TokenRefused`` naming what was wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"malformed: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise TokenRefused(f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
        if header.get("typ") != TOKEN_TYPE:
            raise TokenRefused(f"type {header.get('typ')!r} is not {TOKEN_TYPE}")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenRefused(f"unknown key id {kid!r}")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"{type(exc).__name__}: {exc}") from None
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 128:
        raise TokenRefused("sub is not a name of 1 to 128 characters")
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise TokenRefused(f"role {claims.get('role')!r} is not staff or admin") from None
    return Principal(
        subject=subject,
        role=role,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        token_id=str(claims.get("jti", "")),
    )


def issue_token(
    settings: ApiSettings, *, subject: str, role: Role, ttl_s: float, now: datetime
) -> str:
    """A token for ``subject`` signed with the first configured key (``concierge token issue``)."""
    if not settings.keys:
        raise ValueError("CONCIERGE_JWT_KEYS is unset: there is no key to sign with")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"--ttl must be between 1 s and {MAX_TTL_S // 86400} days")
    if not subject.strip() or len(subject) > 128:
        raise ValueError("--sub must be a name of 1 to 128 characters")
    key: JwtKey = settings.keys[0]
    issued = int(now.timestamp())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "role": role.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(
        claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE}
    )
