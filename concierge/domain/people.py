"""Who is who across channels, as the router and the conversation actors see it now.

A person with identities on one channel only is known by that identity's key (as
before linking existed); a person with identities on several channels by
``person:<user id>``, so that every identity reaches one actor, one context window and
one rate-limit bucket. When a link or an unlink changes a person's key, the actors
known by the old keys *retire*: each finishes the turn it is in and the messages
already in its queue, then ends, and the actor of the new key waits for them
(bounded) before its first turn, so nothing is answered twice or out of order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import structlog
import trio

from concierge.protocol import PersonIdentity, person_key

log = structlog.get_logger(__name__)


@attrs.define(eq=False)
class Tenure:
    """One running conversation actor's hold on its key."""

    key: str
    retiring: bool = False
    ended: trio.Event = attrs.field(factory=trio.Event)
    idle: trio.CancelScope | None = None
    """The scope of the actor's wait for its next message, while it waits: retiring cancels it."""

    def retire(self) -> None:
        self.retiring = True
        if self.idle is not None:
            self.idle.cancel()


def key_of(user_id: int, identities: Sequence[PersonIdentity]) -> dict[str, str]:
    """Each identity's key in the process: ``person:<id>`` when the person spans channels."""
    if len({i.channel for i in identities}) > 1:
        shared = person_key(user_id)
        return {i.user_key: shared for i in identities}
    return {i.user_key: i.user_key for i in identities}


class People:
    """The identity → person map, and the actors that hold each key (one process)."""

    def __init__(self) -> None:
        self._person: dict[str, str] = {}
        self._members: dict[str, dict[str, None]] = {}
        """The identities of each person key in the map, in the order they joined."""
        self._tenures: dict[str, Tenure] = {}
        self._waits: dict[str, list[trio.Event]] = {}

    # -- the map ------------------------------------------------------------------------
    def load(self, identities: Iterable[PersonIdentity]) -> None:
        """Take the linked persons the store knows (at start)."""
        by_user: dict[int, list[PersonIdentity]] = {}
        for identity in identities:
            by_user.setdefault(identity.user_id, []).append(identity)
        for user_id, found in by_user.items():
            self._set(key_of(user_id, found))

    def person_of(self, user_key: str) -> str:
        """The key of ``user_key``'s person: what the actor, cache and bucket are named by."""
        return self._person.get(user_key, user_key)

    def identities(self, person: str) -> tuple[str, ...]:
        """Every identity known by the key ``person`` (itself for a one-channel person)."""
        return tuple(self._members.get(person, ())) or (person,)

    @property
    def linked(self) -> int:
        """Identities that belong to a person spanning channels."""
        return len(self._person)

    def regroup(self, user_id: int, identities: Sequence[PersonIdentity]) -> list[str]:
        """Make ``identities`` one person's; return the keys their actors held before that
        they hold no longer (to retire)."""
        new = key_of(user_id, identities)
        old = {self.person_of(k) for k in new}
        self._set(new)
        return sorted(old - set(new.values()))

    def regroup_key(self, user_key: str, person: str) -> None:
        """Put one identity back under ``person`` (a link abandoned half-way)."""
        self._set({user_key: person})

    def _set(self, keys: dict[str, str]) -> None:
        for user_key, person in keys.items():
            before = self._person.pop(user_key, None)
            if before is not None:
                members = self._members[before]
                del members[user_key]
                if not members:
                    del self._members[before]
            if person != user_key:
                self._person[user_key] = person
                self._members.setdefault(person, {})[user_key] = None

    # -- the actors ---------------------------------------------------------------------
    def enter(self, key: str) -> Tenure:
        tenure = Tenure(key)
        self._tenures[key] = tenure
        return tenure

    def leave(self, tenure: Tenure) -> None:
        if self._tenures.get(tenure.key) is tenure:
            del self._tenures[tenure.key]
        tenure.ended.set()

    def tenure(self, key: str) -> Tenure | None:
        return self._tenures.get(key)

    def retire(self, old_keys: Iterable[str], successors: Iterable[str]) -> list[Tenure]:
        """Retire the actors of ``old_keys``; the actors of ``successors`` wait for them."""
        retired = [t for k in old_keys if (t := self._tenures.get(k)) is not None]
        for tenure in retired:
            tenure.retire()
        for successor in set(successors):
            waiting = [e for e in self._waits.get(successor, []) if not e.is_set()]
            self._waits[successor] = waiting + [t.ended for t in retired]
        if retired:
            log.info("people.actors_retired", count=len(retired))
        return retired

    async def wait_for_predecessors(self, key: str, *, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s`` in all) until the actors ``key`` succeeds have ended;
        ``False`` when one had not."""
        events = self._waits.pop(key, [])
        with trio.move_on_after(timeout_s):
            for event in events:
                await event.wait()
            return True
        log.warning("people.succession_timed_out", waited_s=timeout_s)
        return False
