"""One person across channels: the records of linking identities, and the person's key.

A person (the store's user) owns one or more channel identities. A person with one
identity is known everywhere in the process (conversation actor, session cache,
rate-limit bucket) by that identity's key, as before linking existed; a person with
several is known by ``person_key(user_id)``, so that every identity reaches the
same actor, context window and bucket.
"""

from __future__ import annotations

from datetime import datetime

import attrs

PERSON_PREFIX = "person"


def person_key(user_id: int) -> str:
    """The process-wide key of a person with several identities: ``person:<user id>``."""
    return f"{PERSON_PREFIX}:{user_id}"


@attrs.frozen(kw_only=True)
class PersonIdentity:
    """One channel identity of a person."""

    user_id: int
    channel: str
    user_key: str


@attrs.frozen(kw_only=True)
class LinkCode:
    """A one-time link code that is still valid: only its keyed hash is stored."""

    code_id: int
    digest: str
    channel: str
    user_key: str
    chat_id: str
    expires_at: datetime


@attrs.frozen(kw_only=True)
class Linked:
    """Two persons made one: ``user_id`` kept, ``absorbed_user_id`` merged into it.

    ``absorbed_user_id`` is ``None`` when both identities were the same person already.
    ``identities`` are every identity of the person after the merge.
    """

    user_id: int
    absorbed_user_id: int | None
    identities: tuple[PersonIdentity, ...]


@attrs.frozen(kw_only=True)
class Unlinked:
    """One channel's identities taken from a person into a new person of their own."""

    user_id: int
    """The person the other identities stay with."""
    new_user_id: int
    moved: tuple[PersonIdentity, ...]
    remaining: tuple[PersonIdentity, ...]
