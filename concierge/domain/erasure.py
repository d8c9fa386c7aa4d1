"""Erasure (``concierge forget``): every copy of a user's messages, wherever it is kept.

The durable rows (messages, inbox and outbox rows, identities) go in one transaction
that leaves tombstones (so a replayed delivery is not stored again) and erasure
notices (so every daemon drops the user's live conversation and cache entries); the
session cache's entries (context window, rate-limit buckets) go at once when the
cache is shared (Redis). Interaction metadata stays, attached to an anonymous user
row, so the figures that outlive message texts still add up.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import structlog

from concierge.domain.ratelimit import USER_BUCKETS
from concierge.protocol import person_key
from concierge.store import CacheUnavailable, Erasure, Identities, SessionCache, UnknownUser

log = structlog.get_logger(__name__)


class ErasureDesk(Identities, Erasure, Protocol):
    """What ``forget_user`` needs: finding a user by identity, and erasing them."""


@attrs.frozen(kw_only=True)
class Forgotten:
    user_id: int
    rows: int
    cache_entries: int | None
    """Session cache entries erased; ``None`` when the cache could not be reached."""


def user_of_entry(name: str) -> str:
    """The user key a session cache entry belongs to: a context window's name is the user
    key (or the person's, ``person:<id>``), a rate-limit bucket's is ``user:<that key>``."""
    return name.removeprefix(f"{USER_BUCKETS}:")


def _parse_user(user: int | str) -> int | str:
    if isinstance(user, int):
        return user
    text = user.strip()
    if text.isdigit():
        return int(text)
    channel, sep, rest = text.partition(":")
    if not sep or not channel or not rest:
        raise ValueError(
            f"--user {user!r}: expected an internal user id (digits) or a channel identity "
            "such as telegram:123456789 or waha:221770000000@c.us"
        )
    return text


async def forget_user(
    store: ErasureDesk, user: int | str, *, cache: SessionCache | None = None
) -> Forgotten:
    """Erase one user's messages, inbox/outbox rows, identities and cache entries.

    ``user`` is the internal user id (an int or a string of digits) or a channel
    identity ``<channel>:<id>`` (``telegram:123456789``). Interaction metadata stays,
    attached to an anonymous user row. Raises ``UnknownUser`` when nobody matches. A
    cache that is down is left to the daemons, which erase on the notice.
    """
    who = _parse_user(user)
    if isinstance(who, int):
        user_id = who
    else:
        row = await store.user_for_key(who)
        if row is None:
            raise UnknownUser(f"no user has the identity {who!r}")
        user_id = row.user_id
    erased = await store.forget_user(user_id)
    if erased.rows == 0:
        raise UnknownUser(f"no user has the id {user_id}")
    cache_entries: int | None = None
    if cache is not None:
        # A person on several channels is known in the cache by the person's key.
        keys = {*erased.user_keys, person_key(user_id)}
        try:
            cache_entries = await cache.forget(lambda name: user_of_entry(name) in keys)
        except CacheUnavailable:
            log.warning("store.user_forgotten_cache_unavailable", user_id=user_id)
    log.info("store.user_forgotten", user_id=user_id, rows=erased.rows, cache_entries=cache_entries)
    return Forgotten(user_id=user_id, rows=erased.rows, cache_entries=cache_entries)
