"""``/api/v1/audit`` (admin): the operator actions, newest first."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from concierge.app.api.auth import Principal, Role
from concierge.app.api.guard import Guard
from concierge.app.api.models import AuditEntry, AuditPage, PageQuery
from concierge.domain import Desk


def add_audit_routes(bp: Blueprint, guard: Guard, desk: Desk) -> None:
    @bp.get("/audit")
    @guard.requires(Role.ADMIN)
    @validate_querystring(PageQuery)
    @validate_response(AuditPage)
    async def list_audit(*, principal: Principal, query_args: PageQuery) -> AuditPage:
        """Who did what to whom, when and how (API, staff chat, command line)."""
        rows = await desk.audit(limit=query_args.limit, before=query_args.before)
        full = len(rows) == query_args.limit and rows
        return AuditPage(
            entries=[AuditEntry.of(r) for r in rows],
            next_before=rows[-1].audit_id if full else None,
        )
