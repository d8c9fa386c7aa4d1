"""Put the operator API on the daemon's app: its routes, their errors, their OpenAPI document."""

from __future__ import annotations

from http import HTTPStatus

import attrs
import structlog
from quart import Blueprint, Response, request
from quart_schema import Info, QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors import ProviderPool
from concierge import __version__
from concierge.app.api.audit import add_audit_routes
from concierge.app.api.auth import TokenVerifier
from concierge.app.api.document import API_PREFIX, BEARER, ApiDocument, IdConverter
from concierge.app.api.guard import Guard, Unauthorized
from concierge.app.api.handoffs import add_handoff_routes
from concierge.app.api.keys import add_key_routes
from concierge.app.api.problems import Problem, problem_response, unauthorized
from concierge.app.api.status import ApiStatus
from concierge.app.api.users import add_user_routes
from concierge.domain import (
    Desk,
    DeskError,
    HandoffNotActive,
    HandoffTaken,
    LinkRefused,
    NoSuchHandoff,
)
from concierge.settings import ApiSettings
from concierge.store import StoreUnavailable, UnknownUser

log = structlog.get_logger(__name__)

STORE_RETRY_AFTER_S = 5


@attrs.frozen(kw_only=True)
class ApiDeps:
    settings: ApiSettings
    desk: Desk
    pool: ProviderPool
    status: ApiStatus


def install_api(app: QuartTrio, deps: ApiDeps) -> None:
    """Mount ``/api/v1`` and ``/api/v1/openapi.json`` on ``app``."""
    app.url_map.converters["id"] = IdConverter
    guard = Guard(TokenVerifier(deps.settings), deps.status)
    bp = Blueprint("api", __name__, url_prefix=API_PREFIX)
    app.after_request(_private)
    add_handoff_routes(bp, guard, deps.desk)
    add_user_routes(bp, guard, deps.desk)
    add_key_routes(bp, guard, deps.desk, deps.pool)
    add_audit_routes(bp, guard, deps.desk)
    _answer_errors(bp)
    app.register_blueprint(bp)
    QuartSchema(
        app,
        openapi_path=f"{API_PREFIX}/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info=Info(
            title="concierge operator API",
            version=__version__,
            description=(
                "Handoffs to staff, users, provider keys and the audit trail. Bearer JWTs "
                "from `concierge token issue`; roles staff and admin. Errors are RFC 9457 "
                "problem documents."
            ),
        ),
        security_schemes={BEARER: {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        openapi_provider_class=ApiDocument,
    )


async def _private(response: Response) -> Response:
    """What the API answers is about people: no cache keeps it, no browser sniffs, runs or
    frames it (its document and its 404s included, which are not the blueprint's)."""
    if not request.path.startswith(API_PREFIX + "/"):
        return response
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    return response


def _answer_errors(bp: Blueprint) -> None:
    @bp.errorhandler(Unauthorized)
    async def refused(_: Unauthorized) -> Response:
        return unauthorized()

    @bp.errorhandler(Problem)
    async def problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.detail)

    @bp.errorhandler(DeskError)
    async def desk_refused(exc: DeskError) -> Response:
        status = 404 if isinstance(exc, NoSuchHandoff) else 409
        assert isinstance(exc, NoSuchHandoff | HandoffNotActive | HandoffTaken)
        return problem_response(status, str(exc))

    @bp.errorhandler(LinkRefused)
    async def link_refused(exc: LinkRefused) -> Response:
        return problem_response(409, str(exc))

    @bp.errorhandler(UnknownUser)
    async def unknown_user(exc: UnknownUser) -> Response:
        return problem_response(404, str(exc))

    @bp.errorhandler(RequestSchemaValidationError)
    async def invalid(exc: RequestSchemaValidationError) -> Response:
        return problem_response(400, _validation_detail(exc.validation_error))

    @bp.errorhandler(UnicodeDecodeError)
    async def not_utf8(_: UnicodeDecodeError) -> Response:
        return problem_response(400, "the body is not UTF-8 JSON")

    @bp.errorhandler(StoreUnavailable)
    async def store_down(exc: StoreUnavailable) -> Response:
        log.warning("api.store_unavailable", reason=str(exc))
        return problem_response(
            503,
            "the store is unavailable, retry later",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    @bp.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return problem_response(status, exc.description or HTTPStatus(status).phrase)

    @bp.errorhandler(Exception)
    async def crashed(exc: Exception) -> Response:
        log.error("api.request_failed", exc_info=exc)
        return problem_response(500)


def _validation_detail(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return "the request does not match the schema"
    parts = []
    for item in errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "body"
        if item.get("type") == "string_pattern_mismatch":  # NOT_BLANK: the only pattern
            message = "must not be blank"
        else:
            message = item.get("msg", "invalid")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
