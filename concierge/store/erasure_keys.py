"""Keyed hashes for erasure: what is remembered of a forgotten user, and the key behind it.

A tombstone is ``HMAC-SHA256(key, channel ␟ external id)``: enough to refuse a replayed
delivery, nothing to read back (a WhatsApp message id carries the phone number, and
an unkeyed hash of a phone number is found by trying them all). The key is generated
once per store (``store_keys``) so every process sharing the store agrees on it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

from concierge.protocol import Accepted, AcceptStatus, InboundMessage

__all__ = [
    "ERASED",
    "ERASURE_KEY_NAME",
    "erasure_digest",
    "message_digests",
    "new_erasure_key",
    "with_erased",
]

ERASURE_KEY_NAME = "erasure"
_SEPARATOR = "\x1f"


def new_erasure_key() -> str:
    """A fresh key, hex, for a store that has none yet."""
    return secrets.token_hex(32)


def erasure_digest(key: bytes, *parts: str) -> str:
    """The keyed hash of ``parts`` (a user key; or a channel and an external id)."""
    return hmac.new(key, _SEPARATOR.join(parts).encode("utf-8"), hashlib.sha256).hexdigest()


def message_digests(key: bytes, batch: Iterable[InboundMessage]) -> list[str]:
    return [erasure_digest(key, m.channel.value, m.external_id) for m in batch]


ERASED = Accepted(status=AcceptStatus.ERASED, inbox_id=0)


def with_erased(
    digests: Sequence[str], erased: set[str], kept: Sequence[Accepted]
) -> list[Accepted]:
    """Results in batch order: ``ERASED`` where a tombstone matched, else the next of ``kept``."""
    rest = iter(kept)
    return [ERASED if d in erased else next(rest) for d in digests]
