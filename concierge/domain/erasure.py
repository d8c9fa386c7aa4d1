"""Erasure (``concierge forget``): a user's messages, inbox and outbox rows and identities.

Interaction metadata stays, attached to an anonymous user row, so the figures
that outlive message texts still add up.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import structlog

from concierge.store import Erasure, Identities, UnknownUser

log = structlog.get_logger(__name__)


class ErasureDesk(Identities, Erasure, Protocol):
    """What ``forget_user`` needs: finding a user by identity, and erasing them."""


@attrs.frozen(kw_only=True)
class Forgotten:
    user_id: int
    rows: int


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


async def forget_user(store: ErasureDesk, user: int | str) -> Forgotten:
    """Erase one user's messages, inbox/outbox rows and identities (``concierge forget``).

    ``user`` is the internal user id (an int or a string of digits) or a channel
    identity ``<channel>:<id>`` (``telegram:123456789``). Interaction metadata stays,
    attached to an anonymous user row. Raises ``UnknownUser`` when nobody matches.
    """
    who = _parse_user(user)
    if isinstance(who, int):
        user_id = who
    else:
        row = await store.user_for_key(who)
        if row is None:
            raise UnknownUser(f"no user has the identity {who!r}")
        user_id = row.user_id
    rows = await store.forget_user(user_id)
    if rows == 0:
        raise UnknownUser(f"no user has the id {user_id}")
    log.info("store.user_forgotten", user_id=user_id, rows=rows)
    return Forgotten(user_id=user_id, rows=rows)
