"""A conversation turn that asks for a link code, sends one, or unlinks the person's channel.

The live part (re-keying, retiring the old actors, waiting for the other side's) is
``LivePersons``'; this module turns its outcome into what the person is told.
"""

from __future__ import annotations

import attrs

from concierge.domain import (
    Languages,
    Linking,
    LivePersons,
    MergeAbandoned,
    Reply,
    Verdict,
    channel_name,
)
from concierge.protocol import Channel, ConversationRow, Inbound, OutboundReply


@attrs.frozen(kw_only=True)
class LinkingDeps:
    linking: Linking
    persons: LivePersons
    languages: Languages


@attrs.frozen(kw_only=True)
class LinkTurn:
    reply: str
    others: tuple[OutboundReply, ...] = ()
    """Told besides the sender (the other channel's identity, when linked)."""
    rebind: ConversationRow | None = None
    """The merged person's conversation, which this actor writes to from now on."""


async def ask_code(deps: LinkingDeps, msg: Inbound, language: str) -> LinkTurn:
    """A new code, shown to this identity only (in this chat)."""
    code = await deps.linking.issue(channel=msg.channel, user_key=msg.user_key, chat_id=msg.chat_id)
    text = deps.languages.reply(
        Reply.LINK_CODE, language, code=f"{code[:3]} {code[3:]}", minutes=deps.linking.minutes
    )
    return LinkTurn(reply=text)


async def redeem_code(
    deps: LinkingDeps, msg: Inbound, code: str, language: str, *, person: str
) -> LinkTurn:
    """Link ``msg``'s identity with the code's issuer, if the code is right; both are told,
    each naming the other's channel (never its number)."""
    languages = deps.languages
    redeemed = await deps.linking.redeem(user_key=msg.user_key, code=code)
    if redeemed.verdict is Verdict.REFUSED:
        return LinkTurn(reply=languages.reply(Reply.LINK_REFUSED, language))
    issuer = redeemed.code
    if issuer is None:
        return LinkTurn(reply=languages.reply(Reply.LINK_WRONG, language))
    store = deps.persons.store
    theirs = await store.user_for_key(issuer.user_key)
    mine = await store.user_for_key(msg.user_key)
    if theirs is None or mine is None:  # forgotten meanwhile
        return LinkTurn(reply=languages.reply(Reply.LINK_WRONG, language))
    if theirs.user_id == mine.user_id:
        return LinkTurn(reply=languages.reply(Reply.LINK_ALREADY, language))
    try:
        linked = await deps.persons.merge(theirs.user_id, mine.user_id, own_key=person)
    except MergeAbandoned:
        return LinkTurn(reply=languages.reply(Reply.LINK_BUSY, language))
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
        rebind=await store.conversation_for(linked.user_id),
    )


async def unlink(deps: LinkingDeps, msg: Inbound, language: str) -> LinkTurn:
    """Take ``msg``'s channel out of its person: each side has its own person from now on."""
    languages = deps.languages
    unlinked = await deps.persons.unlink(msg.user_key)
    if unlinked is None:
        return LinkTurn(reply=languages.reply(Reply.UNLINK_NONE, language))
    others = sorted({channel_name(i.channel) for i in unlinked.remaining})
    return LinkTurn(reply=languages.reply(Reply.UNLINK_DONE, language, channel=", ".join(others)))
