"""Errors as ``application/problem+json`` (RFC 9457), one shape for every refusal of the API.

A route raises ``Problem``; the blueprint's handlers turn it, a request the schema
refuses, an HTTP error or a crash into the same document: ``type``, ``title``,
``status`` and, except for 401 and 500, a ``detail`` saying what was wrong.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from quart import Response

PROBLEM_TYPE = "application/problem+json"
UNAUTHORIZED_BODY = json.dumps({"type": "about:blank", "title": "Unauthorized", "status": 401})
"""The one answer to any refused token: the same bytes whatever the reason (it is logged)."""


class Problem(Exception):
    """Raised by a route: answered with ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail


def problem_response(
    status: int, detail: str | None = None, *, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    return Response(json.dumps(body), status=status, content_type=PROBLEM_TYPE, headers=headers)


def unauthorized() -> Response:
    return Response(
        UNAUTHORIZED_BODY,
        status=401,
        content_type=PROBLEM_TYPE,
        headers={"WWW-Authenticate": "Bearer"},
    )
