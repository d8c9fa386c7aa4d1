"""Linking and unlinking persons while their conversations run (a user's code, or staff).

Re-key first, merge second: the identities get their new key (the router sends their
next messages to the new key's actor, which waits for the old ones), the actors of the
old keys retire, and those other than the caller's own are waited for (bounded) before
the store merges the two persons. So every turn in flight is written to a conversation
that still exists, nothing queued is lost, and one actor holds the person afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
import structlog
import trio

from concierge.domain.budget import UserBudget
from concierge.domain.errors import MergeAbandoned
from concierge.domain.people import People
from concierge.protocol import Linked, PersonIdentity, Unlinked
from concierge.store import CacheUnavailable, Conversations, Identities, Persons, SessionCache

log = structlog.get_logger(__name__)


class MergeStore(Persons, Identities, Conversations, Protocol):
    """What merging reaches: persons, their identities and conversations."""


@attrs.frozen(kw_only=True)
class LivePersons:
    """Merge and split persons in the store and, at once, in the running process."""

    store: MergeStore
    people: People
    wait_s: float
    """How long an actor of the other side may take to finish what it holds."""
    cache: SessionCache | None = None
    budget: UserBudget | None = None

    async def merge(self, one: int, other: int, *, own_key: str | None = None) -> Linked:
        """Make the persons ``one`` and ``other`` one (the older id is kept).

        ``own_key`` is the caller's actor (a linking turn): it retires but is not waited
        for. Raises ``MergeAbandoned`` when another actor did not end in time.
        """
        if one == other:
            return await self.store.merge_persons(one, other)
        before = (
            *await self.store.person_identities(one),
            *await self.store.person_identities(other),
        )
        await self._rekey(min(one, other), before, own_key=own_key)
        linked = await self.store.merge_persons(one, other)
        if self.budget is not None and linked.absorbed_user_id is not None:
            self.budget.spend(linked.user_id, self.budget.used(linked.absorbed_user_id))
        log.info(
            "people.merged",
            user_id=linked.user_id,
            absorbed_user_id=linked.absorbed_user_id,
            identities=len(linked.identities),
        )
        return linked

    async def _rekey(
        self, keep: int, identities: Sequence[PersonIdentity], *, own_key: str | None
    ) -> None:
        people = self.people
        previous = {i.user_key: people.person_of(i.user_key) for i in identities}
        old = people.regroup(keep, [attrs.evolve(i, user_id=keep) for i in identities])
        merged = people.person_of(identities[0].user_key)
        retired = people.retire(old, [merged])
        with trio.move_on_after(self.wait_s):
            for tenure in retired:
                if tenure.key != own_key:
                    await tenure.ended.wait()
            await self._forget_contexts((*old, merged))
            return
        log.warning("people.merge_abandoned", reason="an actor did not end in time")
        for user_key, key in previous.items():
            people.regroup_key(user_key, key)
        raise MergeAbandoned("an actor of one side did not end in time")

    async def unlink(self, user_key: str) -> Unlinked | None:
        """Give ``user_key``'s channel a person of its own; ``None`` when it had nothing to
        leave. The person's actor retires; each side's next message starts its own."""
        people = self.people
        person = people.person_of(user_key)
        unlinked = await self.store.unlink_identity(user_key)
        if unlinked is None:
            return None
        people.regroup(unlinked.user_id, unlinked.remaining)
        people.regroup(unlinked.new_user_id, unlinked.moved)
        keys = {people.person_of(i.user_key) for i in (*unlinked.moved, *unlinked.remaining)}
        if person not in keys:
            people.retire([person], keys)
        await self._forget_contexts((person,))
        log.info("people.unlinked", user_id=unlinked.user_id, new_user_id=unlinked.new_user_id)
        return unlinked

    async def _forget_contexts(self, keys: Sequence[str]) -> None:
        """The context windows under the old keys: the next turn rebuilds from the store."""
        if self.cache is None:
            return
        try:
            for key in keys:
                await self.cache.clear_context(key)
        except CacheUnavailable:
            log.warning("people.cache_unavailable", operation="clear_context")
