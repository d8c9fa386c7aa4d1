"""``/api/v1/users`` (admin): look a user up by identity, read their history, link two
persons or unlink an identity, erase them."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from concierge.app.api.auth import Principal, Role
from concierge.app.api.guard import Guard, answers, operator_of
from concierge.app.api.models import (
    Erased,
    LinkBody,
    LookupQuery,
    MessagePage,
    PageQuery,
    UnlinkBody,
    User,
)
from concierge.domain import Desk

ID = "<id:user_id>"


def add_user_routes(bp: Blueprint, guard: Guard, desk: Desk) -> None:
    admin = guard.requires(Role.ADMIN)

    @bp.get("/users")
    @admin
    @answers(404)
    @validate_querystring(LookupQuery)
    @validate_response(User)
    async def find_user(*, principal: Principal, query_args: LookupQuery) -> User:
        """The user a channel identity belongs to, with all their identities."""
        return User.of(await desk.lookup(query_args.identity))

    @bp.get(f"/users/{ID}")
    @admin
    @validate_response(User)
    async def get_user(user_id: int, *, principal: Principal) -> User:
        """A user and their identities."""
        return User.of(await desk.user(user_id))

    @bp.get(f"/users/{ID}/messages")
    @admin
    @validate_querystring(PageQuery)
    @validate_response(MessagePage)
    async def user_messages(
        user_id: int, *, principal: Principal, query_args: PageQuery
    ) -> MessagePage:
        """The user's conversation, a page at a time, going back with ``before``."""
        entries = await desk.user_history(user_id, limit=query_args.limit, before=query_args.before)
        return MessagePage.of(list(entries), limit=query_args.limit)

    @bp.post(f"/users/{ID}/link")
    @admin
    @answers(409)
    @validate_request(LinkBody)
    @validate_response(User)
    async def link_users(user_id: int, *, principal: Principal, data: LinkBody) -> User:
        """Make two persons one (the same parishioner on two channels): their histories merge
        in time order, an open handoff stays open, the older id is kept and returned."""
        return User.of(await desk.link(operator_of(principal), user_id, data.user_id))

    @bp.post(f"/users/{ID}/unlink")
    @admin
    @answers(409)
    @validate_request(UnlinkBody)
    @validate_response(User)
    async def unlink_identity(user_id: int, *, principal: Principal, data: UnlinkBody) -> User:
        """Take an identity's channel out of the person: it becomes a person of its own,
        without the history, which is returned."""
        return User.of(await desk.unlink(operator_of(principal), user_id, data.identity))

    @bp.delete(f"/users/{ID}")
    @admin
    @validate_response(Erased)
    async def erase_user(user_id: int, *, principal: Principal) -> Erased:
        """Erase the user's messages and identities (as ``concierge forget``)."""
        forgotten = await desk.erase(operator_of(principal), user_id)
        return Erased(user_id=forgotten.user_id, rows=forgotten.rows)
