"""``/api/v1/providers`` (admin): each API key's state, and taking a key out of rotation or back.

A change acts at once on the running provider pool (this process), is audited, and
lasts until the next change or restart: to retire a key for good, remove it from
``<NAME>_API_KEYS``.
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from actors import ProviderPool
from concierge.app.api.auth import Principal, Role
from concierge.app.api.guard import Guard, operator_of
from concierge.app.api.models import DisableBody, Key, Provider, ProviderList
from concierge.app.api.problems import Problem
from concierge.domain import Desk

KEY = "/providers/<provider>/keys/<alias>"


def add_key_routes(bp: Blueprint, guard: Guard, desk: Desk, pool: ProviderPool) -> None:
    admin = guard.requires(Role.ADMIN)

    async def change(
        principal: Principal, provider: str, alias: str, *, enabled: bool, reason: str = ""
    ) -> Key:
        operator = operator_of(principal)
        try:
            stats = pool.set_key_enabled(
                provider, alias, enabled=enabled, by=operator.name, reason=reason
            )
        except KeyError:
            raise Problem(404, f"provider {provider!r} has no API key {alias!r}") from None
        await desk.note(
            operator,
            "provider_key.enable" if enabled else "provider_key.disable",
            f"key:{provider}/{alias}",
            detail=reason,
        )
        return Key.of(provider, stats)

    @bp.get("/providers")
    @admin
    @validate_response(ProviderList)
    async def list_provider_keys(*, principal: Principal) -> ProviderList:
        """Each provider's breaker and keys: enabled, cooling until when, disabled and why, credit."""
        stats = pool.statistics()
        return ProviderList(providers=[Provider.of(p) for p in stats.providers if not p.offline])

    @bp.post(f"{KEY}/disable")
    @admin
    @validate_request(DisableBody)
    @validate_response(Key)
    async def disable_key(
        provider: str, alias: str, *, principal: Principal, data: DisableBody
    ) -> Key:
        """Take the key out of rotation now, until an operator enables it again."""
        return await change(principal, provider, alias, enabled=False, reason=data.reason)

    @bp.post(f"{KEY}/enable")
    @admin
    @validate_response(Key)
    async def enable_key(provider: str, alias: str, *, principal: Principal) -> Key:
        """Bring the key back into rotation now (also one the pool disabled as dead)."""
        return await change(principal, provider, alias, enabled=True)
