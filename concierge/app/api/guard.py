"""Who may call a route: the bearer token checked, the role required, the errors it answers.

``Guard.requires(role)`` wraps a view: a missing or refused token ends the request
with the one 401 body (the reason goes to the log as ``api.auth_failed``); a token
of too small a role gets 403. The view receives the caller as ``operator``.
``answers(...)`` declares the problem statuses a view may answer, for the document.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from quart import request

from concierge.app.api.auth import Principal, Role, TokenRefused, TokenVerifier
from concierge.app.api.problems import Problem
from concierge.app.api.status import ApiStatus
from concierge.domain import Operator
from concierge.protocol import new_correlation_id

log = structlog.get_logger(__name__)

ROLE_ATTRIBUTE = "_concierge_role"
ANSWERS_ATTRIBUTE = "_concierge_answers"
MAX_TOKEN_CHARS = 4096
VIA_API = "api"

View = TypeVar("View", bound=Callable[..., Awaitable[Any]])


class Unauthorized(Exception):
    """The request carries no acceptable token (answered 401 with no detail)."""


class Guard:
    def __init__(self, verifier: TokenVerifier, status: ApiStatus) -> None:
        self._verifier = verifier
        self._status = status

    def principal(self) -> Principal:
        """The caller of the current request; raises ``Unauthorized`` (the reason is logged)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if not header:
                raise TokenRefused("no Authorization header")
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRefused("not a bearer token")
            if len(token) > MAX_TOKEN_CHARS:
                raise TokenRefused(f"token longer than {MAX_TOKEN_CHARS} characters")
            return self._verifier.verify(token.strip())
        except TokenRefused as refused:
            self._status.refused += 1
            log.warning(
                "api.auth_failed",
                reason=refused.reason,
                method=request.method,
                path=request.path,
            )
            raise Unauthorized from None

    def requires(self, role: Role) -> Callable[[View], View]:
        def decorate(view: View) -> View:
            @functools.wraps(view)
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                principal = self.principal()
                if not principal.role.allows(role):
                    self._status.forbidden += 1
                    log.warning(
                        "api.forbidden",
                        subject=principal.subject,
                        role=principal.role.value,
                        needed=role.value,
                        path=request.path,
                    )
                    raise Problem(403, f"this needs the {role.value} role")
                structlog.contextvars.bind_contextvars(operator=principal.subject)
                return await view(*args, principal=principal, **kwargs)

            setattr(guarded, ROLE_ATTRIBUTE, role)
            return guarded  # type: ignore[return-value]

        return decorate


def answers(*statuses: int) -> Callable[[View], View]:
    """Declare the problem statuses (besides 400/401/403/404, found by themselves) a view answers."""

    def decorate(view: View) -> View:
        setattr(view, ANSWERS_ATTRIBUTE, frozenset(statuses))
        return view

    return decorate


def operator_of(principal: Principal) -> Operator:
    """The caller as the desk records them, with the request's correlation id."""
    bound = structlog.contextvars.get_contextvars().get("correlation_id")
    return Operator(
        name=principal.subject,
        role=principal.role.value,
        via=VIA_API,
        correlation_id=bound if isinstance(bound, str) and bound else new_correlation_id(),
    )
