"""One-time link codes: asked for on one channel, sent from the other.

A code is six random digits (``secrets``), valid ``code_ttl_s``, single use; the store
keeps only its keyed hash (HMAC with the store's erasure key), and a code sent is
compared with every live one in constant time. An identity that sent
``max_failures`` wrong codes within ``failure_window_s`` is refused, right code or not,
until the window has passed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

import attrs
import structlog

from concierge.protocol import Channel, LinkCode, utcnow
from concierge.store import Erasure, Identities, Persons

log = structlog.get_logger(__name__)

CODE_DIGITS = 6
_CODE = re.compile(r"^\s*(\d{3})[ -]?(\d{3})\s*$")

CHANNEL_NAMES = {Channel.TELEGRAM.value: "Telegram", Channel.WAHA.value: "WhatsApp"}
"""How a confirmation names a channel (never the number or the id)."""


def channel_name(channel: str) -> str:
    return CHANNEL_NAMES.get(channel, channel)


def code_in(text: str) -> str | None:
    """The link code a message is made of (``123456``, ``123 456``, ``123-456``), if any."""
    match = _CODE.match(text)
    return None if match is None else match.group(1) + match.group(2)


class LinkStore(Persons, Identities, Erasure, Protocol):
    """What linking reaches: persons, identities, and the key of the store's hashes."""


@attrs.frozen(kw_only=True)
class LinkSettings:
    code_ttl_s: float = 600.0
    max_failures: int = 5
    failure_window_s: float = 3600.0


class Verdict(enum.Enum):
    MATCHED = "matched"
    WRONG = "wrong"
    """No live code matches (wrong, expired or used), or it is the sender's own."""
    REFUSED = "refused"
    """Too many wrong codes from this identity lately."""


@attrs.frozen(kw_only=True)
class Redeemed:
    verdict: Verdict
    code: LinkCode | None = None
    """The claimed code (deleted in the store: it serves once), when ``MATCHED``."""


@attrs.define(kw_only=True)
class Linking:
    store: LinkStore
    settings: LinkSettings = attrs.field(factory=LinkSettings)
    clock: Callable[[], datetime] = utcnow
    _key: bytes | None = None

    async def _digest(self, code: str) -> str:
        if self._key is None:
            self._key = await self.store.erasure_key()
        return hmac.new(self._key, b"link:" + code.encode(), hashlib.sha256).hexdigest()

    @property
    def minutes(self) -> int:
        return max(1, round(self.settings.code_ttl_s / 60))

    async def issue(self, *, channel: Channel, user_key: str, chat_id: str) -> str:
        """A new code for ``user_key`` (its previous one stops working)."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        await self.store.issue_link_code(
            channel=channel,
            user_key=user_key,
            chat_id=chat_id,
            digest=await self._digest(code),
            expires_at=self.clock() + timedelta(seconds=self.settings.code_ttl_s),
        )
        log.info("linking.code_issued", channel=channel.value)
        return code

    async def redeem(self, *, user_key: str, code: str) -> Redeemed:
        """Check ``code`` sent by ``user_key``; a match is claimed (used up) at once."""
        now = self.clock()
        since = now - timedelta(seconds=self.settings.failure_window_s)
        if await self.store.link_failures_since(user_key, since) >= self.settings.max_failures:
            log.info("linking.code_refused", reason="too_many_failures")
            return Redeemed(verdict=Verdict.REFUSED)
        digest = await self._digest(code)
        match: LinkCode | None = None
        for live in await self.store.live_link_codes(now):
            # Every live code is compared, each in constant time.
            if hmac.compare_digest(live.digest, digest) and match is None:
                match = live
        claimed = None
        if match is not None and match.user_key != user_key:
            claimed = await self.store.claim_link_code(match.code_id, now=now)
        if claimed is None:
            await self.store.record_link_failure(user_key, now)
            log.info("linking.code_rejected")
            return Redeemed(verdict=Verdict.WRONG)
        log.info("linking.code_matched", channel=claimed.channel)
        return Redeemed(verdict=Verdict.MATCHED, code=claimed)
