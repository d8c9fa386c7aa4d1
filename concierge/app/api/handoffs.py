"""``/api/v1/handoffs``: staff list handoffs, read one with its conversation, claim, reply, close."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from concierge.app.api.auth import Principal, Role
from concierge.app.api.guard import Guard, answers, operator_of
from concierge.app.api.models import (
    ClaimQuery,
    DetailQuery,
    Handoff,
    HandoffDetail,
    HandoffList,
    HandoffQuery,
    Me,
    Message,
    MessagePage,
    PageQuery,
    ReplyBody,
)
from concierge.app.api.problems import Problem
from concierge.domain import Desk

ID = "<id:handoff_id>"


def add_handoff_routes(bp: Blueprint, guard: Guard, desk: Desk) -> None:
    """Staff's routes: who they are, the handoffs to read, and what they do with one."""
    _add_reading(bp, guard, desk)
    _add_actions(bp, guard, desk)


def _add_reading(bp: Blueprint, guard: Guard, desk: Desk) -> None:
    staff = guard.requires(Role.STAFF)

    @bp.get("/me")
    @staff
    @validate_response(Me)
    async def me(*, principal: Principal) -> Me:
        """Who the token speaks for, and until when."""
        return Me(
            subject=principal.subject, role=principal.role.value, expires_at=principal.expires_at
        )

    @bp.get("/handoffs")
    @staff
    @validate_querystring(HandoffQuery)
    @validate_response(HandoffList)
    async def list_handoffs(*, principal: Principal, query_args: HandoffQuery) -> HandoffList:
        """Active handoffs (urgent first, then oldest first), or closed ones (newest first)."""
        views = await desk.handoffs(
            active=query_args.state == "active", limit=query_args.limit, before=query_args.before
        )
        return HandoffList(handoffs=[Handoff.of(v) for v in views])

    @bp.get(f"/handoffs/{ID}")
    @staff
    @validate_querystring(DetailQuery)
    @validate_response(HandoffDetail)
    async def get_handoff(
        handoff_id: int, *, principal: Principal, query_args: DetailQuery
    ) -> HandoffDetail:
        """One handoff with the newest messages of its conversation, oldest first."""
        page = await desk.page(handoff_id, limit=query_args.messages)
        return HandoffDetail(
            handoff=Handoff.of(page.handoff), messages=[Message.of(m) for m in page.messages]
        )

    @bp.get(f"/handoffs/{ID}/messages")
    @staff
    @validate_querystring(PageQuery)
    @validate_response(MessagePage)
    async def handoff_messages(
        handoff_id: int, *, principal: Principal, query_args: PageQuery
    ) -> MessagePage:
        """The handoff's conversation, a page at a time, going back with ``before``."""
        entries = await desk.handoff_history(
            handoff_id, limit=query_args.limit, before=query_args.before
        )
        return MessagePage.of(list(entries), limit=query_args.limit)


def _add_actions(bp: Blueprint, guard: Guard, desk: Desk) -> None:
    staff = guard.requires(Role.STAFF)

    @bp.post(f"/handoffs/{ID}/claim")
    @staff
    @answers(409)
    @validate_querystring(ClaimQuery)
    @validate_response(Handoff)
    async def claim_handoff(
        handoff_id: int, *, principal: Principal, query_args: ClaimQuery
    ) -> Handoff:
        """Take the handoff on (``take_over`` to take it from whoever claimed it)."""
        view = await desk.claim(operator_of(principal), handoff_id, take_over=query_args.take_over)
        return Handoff.of(view)

    @bp.post(f"/handoffs/{ID}/reply")
    @staff
    @answers(409)
    @validate_request(ReplyBody)
    @validate_response(Handoff, 202)
    async def reply_to_handoff(
        handoff_id: int, *, principal: Principal, data: ReplyBody
    ) -> tuple[Handoff, int]:
        """Send a message to the user through their channel, as the parish (queued: 202).

        An unclaimed handoff is claimed by whoever answers it.
        """
        view = await desk.reply(operator_of(principal), handoff_id, data.text)
        if view is None:  # only a staff chat message replayed gets None
            raise Problem(409, "this reply was already sent")
        return Handoff.of(view), 202

    @bp.post(f"/handoffs/{ID}/close")
    @staff
    @answers(409)
    @validate_response(Handoff)
    async def close_handoff(handoff_id: int, *, principal: Principal) -> Handoff:
        """End the handoff: the user is told the concierge answers again."""
        return Handoff.of(await desk.close(operator_of(principal), handoff_id))
