"""``concierge token issue``: print an operator API token for a staff member or an admin."""

from __future__ import annotations

import sys
from datetime import timedelta

from concierge.app.api import Role, issue_token
from concierge.protocol import utcnow
from concierge.settings import ApiSettings

EXIT_OK = 0
EXIT_BAD_SETTINGS = 2


def issue_command(settings: ApiSettings, *, subject: str, role: str, ttl_s: float) -> int:
    """The token on stdout (nothing else, for scripts); what it is, on stderr."""
    if not settings.enabled:
        print(
            "concierge: CONCIERGE_JWT_KEYS is unset: set it to kid=secret (a secret of at least "
            "32 bytes) in the daemon's environment to turn the operator API on",
            file=sys.stderr,
        )
        return EXIT_BAD_SETTINGS
    now = utcnow()
    try:
        token = issue_token(settings, subject=subject, role=Role(role), ttl_s=ttl_s, now=now)
    except ValueError as exc:
        print(f"concierge: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    print(token)
    until = (now + timedelta(seconds=ttl_s)).isoformat(timespec="minutes")
    print(
        f"token for {subject} ({role}), signed with key {settings.keys[0].kid}, "
        f"valid until {until}",
        file=sys.stderr,
    )
    return EXIT_OK
