"""The staff desk: what an operator can read and do, from the API, the staff chat or the CLI.

Handoffs (list, read with their conversation, claim, reply, close), a user's history,
lookup by identity, linking two persons and unlinking an identity, erasure, and the
audit trail. Every action is recorded by
``note`` (stored and logged: who, what, on whom, when, how); a staff reply reaches
the user through the durable outbox, marked as the parish's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
import structlog
import trio

from concierge.domain.erasure import Forgotten, forget_user
from concierge.domain.errors import HandoffNotActive, HandoffTaken, LinkRefused, NoSuchHandoff
from concierge.domain.handoffs import HandoffDesk, chat_of, close_handoff, user_language
from concierge.domain.language import Languages
from concierge.domain.merging import LivePersons
from concierge.domain.nudges import nudge_outbox
from concierge.domain.replies import Reply
from concierge.domain.staff_notices import StaffChat
from concierge.protocol import (
    AuditEntry,
    AuditRow,
    Channel,
    HandoffView,
    HistoryEntry,
    OutboundReply,
    OutboxMsg,
    StaffReply,
    UserView,
    new_correlation_id,
)
from concierge.store import Audit, Erasure, OperatorQueries, Turns, UnknownUser

log = structlog.get_logger(__name__)


class DeskStore(HandoffDesk, OperatorQueries, Audit, Erasure, Turns, Protocol):
    """What the desk reaches: handoffs and their conversations, the outbox, identities,
    erasure, the audit trail, and the staff chat's inbox rows it settles."""


@attrs.frozen(kw_only=True)
class Operator:
    """Who acts: ``name`` (a token's subject, or a staff chat member), their ``role``
    (``staff``/``admin``) and where from (``via``: ``api``, ``staff_chat``, ``cli``)."""

    name: str
    role: str
    via: str
    correlation_id: str = attrs.field(factory=new_correlation_id)


@attrs.frozen(kw_only=True)
class HandoffPage:
    """A handoff with the newest messages of its conversation (oldest first)."""

    handoff: HandoffView
    messages: tuple[HistoryEntry, ...]


class Desk:
    """The operator actions over one store; ``outbox_nudges`` wake the channels' senders.

    ``languages`` give the texts: a staff reply's frame in the user's language, what the
    staff chat is told in the default one.
    """

    def __init__(
        self,
        *,
        store: DeskStore,
        languages: Languages,
        outbox_nudges: Mapping[Channel, trio.MemorySendChannel[OutboxMsg]] | None = None,
        staff: StaffChat | None = None,
        persons: LivePersons | None = None,
    ) -> None:
        self.store = store
        self.persons = persons
        self.languages = languages
        self.nudges = outbox_nudges
        self._staff = staff

    # -- reading ---------------------------------------------------------------------------
    async def handoffs(
        self, *, active: bool, limit: int, before: int | None = None
    ) -> Sequence[HandoffView]:
        return await self.store.list_handoffs(active=active, limit=limit, before=before)

    async def handoff(self, handoff_id: int) -> HandoffView:
        view = await self.store.handoff_view(handoff_id)
        if view is None:
            raise NoSuchHandoff(handoff_id)
        return view

    async def page(self, handoff_id: int, *, limit: int) -> HandoffPage:
        view = await self.handoff(handoff_id)
        messages = await self.store.history(view.conversation_id, limit=limit)
        return HandoffPage(handoff=view, messages=tuple(messages))

    async def handoff_history(
        self, handoff_id: int, *, limit: int, before: int | None = None
    ) -> Sequence[HistoryEntry]:
        view = await self.handoff(handoff_id)
        return await self.store.history(view.conversation_id, limit=limit, before=before)

    async def user(self, user_id: int) -> UserView:
        view = await self.store.user_view(user_id)
        if view is None:
            raise UnknownUser(f"no user has the id {user_id}")
        return view

    async def lookup(self, identity: str) -> UserView:
        """The user a channel identity (``telegram:111``, ``waha:33612345678@c.us``) belongs to."""
        row = await self.store.user_for_key(identity)
        if row is None:
            raise UnknownUser(f"no user has the identity {identity!r}")
        return await self.user(row.user_id)

    async def user_history(
        self, user_id: int, *, limit: int, before: int | None = None
    ) -> Sequence[HistoryEntry]:
        view = await self.user(user_id)
        if view.conversation_id is None:
            return ()
        return await self.store.history(view.conversation_id, limit=limit, before=before)

    async def audit(self, *, limit: int, before: int | None = None) -> Sequence[AuditRow]:
        return await self.store.audit_entries(limit=limit, before=before)

    # -- acting ----------------------------------------------------------------------------
    async def claim(self, operator: Operator, handoff_id: int, *, take_over: bool) -> HandoffView:
        """Assign the handoff to ``operator``; one another claimed needs ``take_over``."""
        before = await self.handoff(handoff_id)
        if not before.active:
            raise HandoffNotActive(handoff_id)
        await self.store.claim_handoff(handoff_id, by=operator.name, take_over=take_over)
        after = await self.handoff(handoff_id)
        if after.claimed_by != operator.name:
            if not after.active:
                raise HandoffNotActive(handoff_id)
            raise HandoffTaken(handoff_id, by=after.claimed_by or "someone")
        if before.claimed_by != operator.name:
            await self.note(
                operator,
                "handoff.take_over" if before.claimed_by else "handoff.claim",
                f"handoff:{handoff_id}",
                detail=f"from {before.claimed_by}" if before.claimed_by else "",
            )
        return after

    async def reply(
        self, operator: Operator, handoff_id: int, text: str, *, inbox_id: int | None = None
    ) -> HandoffView | None:
        """Send ``text`` to the handoff's user, through their channel, as the parish's.

        ``inbox_id``: the staff chat message this settles; ``None`` comes back when that
        message was handled before (a replay), and nothing is sent again.
        """
        view = await self.handoff(handoff_id)
        if not view.active:
            raise HandoffNotActive(handoff_id)
        address = chat_of(view.user_key)
        if address is None:
            raise HandoffNotActive(handoff_id, why="its user was forgotten")
        channel, chat_id = address
        language = await user_language(self.store, self.languages, view.conversation_id)
        outbox_id = await self.store.record_staff_reply(
            StaffReply(
                handoff_id=handoff_id,
                author=operator.name,
                text=text,
                reply=OutboundReply(
                    correlation_id=operator.correlation_id,
                    channel=channel,
                    user_key=view.user_key,
                    chat_id=chat_id,
                    text=self.languages.reply(Reply.STAFF_REPLY, language, text=text),
                ),
                inbox_id=inbox_id,
            )
        )
        if outbox_id is None:
            if not (await self.handoff(handoff_id)).active:
                raise HandoffNotActive(handoff_id)
            return None
        nudge_outbox(self.nudges, channel, operator.correlation_id)
        await self.note(
            operator, "handoff.reply", f"handoff:{handoff_id}", detail=f"{len(text)} characters"
        )
        return await self.handoff(handoff_id)

    async def close(self, operator: Operator, handoff_id: int) -> HandoffView:
        """Close the handoff; the user is told the concierge answers again (and the staff chat)."""
        view = await self.handoff(handoff_id)
        closed = await close_handoff(
            self.store,
            languages=self.languages,
            by=operator.name,
            handoff_id=view.handoff_id,
            outbox_nudges=self.nudges,
            staff=self._staff,
        )
        if closed is None:
            raise HandoffNotActive(handoff_id)
        await self.note(operator, "handoff.close", f"handoff:{handoff_id}")
        return await self.handoff(handoff_id)

    async def link(self, operator: Operator, user_id: int, other_user_id: int) -> UserView:
        """Make two persons one, live (their conversations merge); the older id is kept."""
        for uid in (user_id, other_user_id):
            if (await self.user(uid)).forgotten_at is not None:
                raise LinkRefused(f"user {uid} was forgotten")
        if self.persons is None:
            raise LinkRefused("linking is not available in this process")
        linked = await self.persons.merge(user_id, other_user_id)
        await self.note(
            operator,
            "user.link",
            f"user:{linked.user_id}",
            detail=f"merged user:{linked.absorbed_user_id}" if linked.absorbed_user_id else "",
        )
        return await self.user(linked.user_id)

    async def unlink(self, operator: Operator, user_id: int, identity: str) -> UserView:
        """Give ``identity``'s channel a person of its own; returns that new person."""
        row = await self.store.user_for_key(identity)
        if row is None or row.user_id != user_id:
            raise UnknownUser(f"user {user_id} has no identity {identity!r}")
        if self.persons is None:
            raise LinkRefused("linking is not available in this process")
        unlinked = await self.persons.unlink(identity)
        if unlinked is None:
            raise LinkRefused(f"user {user_id} has no identity on another channel")
        await self.note(
            operator, "user.unlink", f"user:{user_id}", detail=f"to user:{unlinked.new_user_id}"
        )
        return await self.user(unlinked.new_user_id)

    async def erase(self, operator: Operator, user_id: int) -> Forgotten:
        """``concierge forget`` for one user id."""
        forgotten = await forget_user(self.store, user_id)
        await self.note(operator, "user.erase", f"user:{user_id}", detail=f"{forgotten.rows} rows")
        return forgotten

    async def note(self, operator: Operator, action: str, target: str, *, detail: str = "") -> None:
        """Record an operator action in the audit trail and the log."""
        await record_action(self.store, operator, action, target, detail=detail)


async def record_action(
    store: Audit, operator: Operator, action: str, target: str, *, detail: str = ""
) -> None:
    """Store one operator action (who, what, on whom, how; when is now) and log it."""
    await store.record_audit(
        AuditEntry(
            actor=operator.name,
            role=operator.role,
            action=action,
            target=target,
            via=operator.via,
            detail=detail,
            correlation_id=operator.correlation_id,
        )
    )
    log.info(
        "audit.recorded",
        actor=operator.name,
        role=operator.role,
        action=action,
        target=target,
        via=operator.via,
        correlation_id=operator.correlation_id,
    )
