"""A conversation turn that links or unlinks the person's channels, live.

Linking re-keys first and merges second: the identities' new key is set (the router
sends their next messages to the merged person's actor, which waits for the old
ones), the old actors are retired, and the other side's actor, which may be in the
middle of a turn, is waited for (bounded) before the store merges the two persons. So
every turn in flight is written to a conversation that still exists, nothing queued is
lost, and one actor holds the person afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
import structlog
import trio

from concierge.domain import (
    ContextWindow,
    Languages,
    Linking,
    People,
    Reply,
    UserBudget,
    Verdict,
    channel_name,
)
from concierge.protocol import Channel, ConversationRow, Inbound, OutboundReply, PersonIdentity
from concierge.store import Conversations, Identities, Persons

log = structlog.get_logger(__name__)


class LinkingStore(Persons, Identities, Conversations, Protocol):
    """What a linking turn reaches besides the codes."""


@attrs.frozen(kw_only=True)
class LinkingDeps:
    store: LinkingStore
    people: People
    linking: Linking
    languages: Languages
    window: ContextWindow
    budget: UserBudget
    wait_s: float
    """How long the other side's actor may take to finish what it holds."""


@attrs.frozen(kw_only=True)
class LinkTurn:
    reply: str
    others: tuple[OutboundReply, ...] = ()
    """Told besides the sender (the other channel's identity, when linked)."""
    rebind: ConversationRow | None = None
    """The merged person's conversation, which this actor writes to from now on."""


async def ask_code(deps: LinkingDeps, msg: Inbound, language: str) -> LinkTurn:
    code = await deps.linking.issue(channel=msg.channel, user_key=msg.user_key, chat_id=msg.chat_id)
    shown = f"{code[:3]} {code[3:]}"
    text = deps.languages.reply(Reply.LINK_CODE, language, code=shown, minutes=deps.linking.minutes)
    return LinkTurn(reply=text)


async def redeem_code(
    deps: LinkingDeps, msg: Inbound, code: str, language: str, *, person: str
) -> LinkTurn:
    """Link ``msg``'s identity with the code's issuer, if the code is right."""
    languages = deps.languages
    redeemed = await deps.linking.redeem(user_key=msg.user_key, code=code)
    if redeemed.verdict is Verdict.REFUSED:
        return LinkTurn(reply=languages.reply(Reply.LINK_REFUSED, language))
    issuer = redeemed.code
    if issuer is None:
        return LinkTurn(reply=languages.reply(Reply.LINK_WRONG, language))
    store = deps.store
    theirs = await store.user_for_key(issuer.user_key)
    mine = await store.user_for_key(msg.user_key)
    if theirs is None or mine is None:  # forgotten meanwhile
        return LinkTurn(reply=languages.reply(Reply.LINK_WRONG, language))
    if theirs.user_id == mine.user_id:
        return LinkTurn(reply=languages.reply(Reply.LINK_ALREADY, language))
    before = (
        *await store.person_identities(theirs.user_id),
        *await store.person_identities(mine.user_id),
    )
    keep = min(theirs.user_id, mine.user_id)
    if not await _rekey(deps, person, keep, before):
        return LinkTurn(reply=languages.reply(Reply.PROVIDER_FAILED, language))
    linked = await store.merge_persons(theirs.user_id, mine.user_id)
    if linked.absorbed_user_id is not None:
        deps.budget.spend(linked.user_id, deps.budget.used(linked.absorbed_user_id))
    conversation = await store.conversation_for(linked.user_id)
    log.info(
        "linking.persons_merged",
        user_id=linked.user_id,
        absorbed_user_id=linked.absorbed_user_id,
        identities=len(linked.identities),
    )
    told = OutboundReply(
        correlation_id=msg.correlation_id,
        channel=Channel(issuer.channel),
        user_key=issuer.user_key,
        chat_id=issuer.chat_id,
        text=languages.reply(Reply.LINK_DONE, language, channel=channel_name(msg.channel.value)),
    )
    return LinkTurn(
        reply=languages.reply(Reply.LINK_DONE, language, channel=channel_name(issuer.channel)),
        others=(told,),
        rebind=conversation,
    )


async def _rekey(
    deps: LinkingDeps, person: str, keep: int, identities: Sequence[PersonIdentity]
) -> bool:
    """Give ``identities`` the merged person's key and retire the actors of their old keys;
    wait for those other than this one (``person``) to end. ``False`` (the old keys back)
    when one did not end in time."""
    people = deps.people
    previous = {i.user_key: people.person_of(i.user_key) for i in identities}
    old = people.regroup(keep, [attrs.evolve(i, user_id=keep) for i in identities])
    merged = people.person_of(identities[0].user_key)
    retired = people.retire(old, [merged])
    with trio.move_on_after(deps.wait_s):
        for tenure in retired:
            if tenure.key != person:
                await tenure.ended.wait()
        for key in (*old, merged):
            await deps.window.clear(key)
        return True
    log.warning("linking.merge_abandoned", reason="an actor of the other side did not end")
    for user_key, key in previous.items():
        people.regroup_key(user_key, key)
    return False


async def unlink(deps: LinkingDeps, msg: Inbound, language: str, *, person: str) -> LinkTurn:
    """Take ``msg``'s channel out of its person: each side has its own person from now on."""
    languages = deps.languages
    unlinked = await deps.store.unlink_identity(msg.user_key)
    if unlinked is None:
        return LinkTurn(reply=languages.reply(Reply.UNLINK_NONE, language))
    people = deps.people
    people.regroup(unlinked.user_id, unlinked.remaining)
    people.regroup(unlinked.new_user_id, unlinked.moved)
    keys = {people.person_of(i.user_key) for i in (*unlinked.moved, *unlinked.remaining)}
    if person not in keys:
        people.retire([person], keys)
    await deps.window.clear(person)
    log.info(
        "linking.identity_unlinked", user_id=unlinked.user_id, new_user_id=unlinked.new_user_id
    )
    others = sorted({channel_name(i.channel) for i in unlinked.remaining})
    return LinkTurn(
        reply=languages.reply(Reply.UNLINK_DONE, language, channel=", ".join(others)),
    )
