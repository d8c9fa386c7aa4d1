"""The HTTP face of the daemon: probes, metrics, the channels' webhooks, the operator API.

A QuartTrio app served by ``hypercorn.trio.serve`` as a supervised child, with
bare-ASGI routes in front of it where speed matters (Telegram's webhook). It holds
no work of its own: webhooks commit to the inbox and return, probes read the
``HealthBoard``, and the operator API and console (mounted by ``install`` hooks)
call the staff desk. Errors under ``/api/`` are problem documents like the API's own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from concierge.app.api import problem_response
from concierge.app.errors import CannotListen
from concierge.observability import HealthBoard, LatencyHistogram, Status
from concierge.protocol import new_correlation_id
from concierge.settings import HttpSettings

log = structlog.get_logger(__name__)


@attrs.define
class RequestMetrics:
    """Requests by route and status, and their latency; exported as Prometheus families."""

    counts: dict[tuple[str, str, str], int] = attrs.field(factory=dict)
    latency: dict[str, LatencyHistogram] = attrs.field(factory=dict)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = LatencyHistogram()
        histogram.observe(seconds)

    def metrics(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "concierge_http_requests",
            "HTTP requests by route and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self.counts.items()):
            requests.add_metric([route, method, status], count)
        yield requests
        latency = HistogramMetricFamily(
            "concierge_http_request_duration_seconds",
            "HTTP request latency by route",
            labels=["route"],
        )
        for route, histogram in sorted(self.latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.sum)
        yield latency


MAX_CLIENT_REQUEST_ID_CHARS = 64
_CLIENT_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CLIENT_REQUEST_ID_CHARS}}}")


def client_request_id(header: str | None) -> str | None:
    """A client's ``X-Request-Id`` fit to log beside ours: printable ASCII, bounded, else none."""
    if header is None or _CLIENT_REQUEST_ID.fullmatch(header) is None:
        return None
    return header


class _Collector:
    def __init__(self, sources: Sequence[Callable[[], Iterable[Metric]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source()


def create_app(
    *,
    board: HealthBoard,
    settings: HttpSettings,
    blueprints: Sequence[Blueprint] = (),
    install: Sequence[Callable[[QuartTrio], None]] = (),
) -> QuartTrio:
    """Build the app; ``blueprints`` carry the channels' webhook routes, ``install`` hooks
    mount the rest (the operator API and the console)."""
    app = QuartTrio("concierge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = settings.read_timeout_s
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    request_metrics = RequestMetrics()
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(_Collector([board.metrics, request_metrics.metrics]))
    app.extensions["concierge.request_metrics"] = request_metrics

    _hook_requests(app, request_metrics)

    @app.get("/livez")
    async def livez() -> Response:
        return _json({"status": "pass"}, 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        reasons = board.not_ready_reasons()
        if reasons:
            return _json({"status": "fail", "reasons": reasons}, 503, headers={"Retry-After": "5"})
        return _json({"status": "pass"}, 200)

    @app.get("/health")
    async def health() -> Response:
        body, status = board.report()
        code = 503 if status is Status.FAIL else 200
        return _json(
            body,
            code,
            content_type="application/health+json",
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), status=200, content_type=content_type)

    _answer_errors(app, settings)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    for hook in install:
        hook(app)
    return app


def _hook_requests(app: QuartTrio, request_metrics: RequestMetrics) -> None:
    """Around every request: its correlation id, its unread body drained, its metrics."""

    @app.before_request
    async def _bind_request() -> None:
        structlog.contextvars.clear_contextvars()
        # The server mints correlation ids: a client's (even through the proxy) is only a hint.
        structlog.contextvars.bind_contextvars(correlation_id=new_correlation_id())
        client_id = client_request_id(request.headers.get("X-Request-Id"))
        if client_id is not None:
            structlog.contextvars.bind_contextvars(client_request_id=client_id)
        request.environ_started = time.perf_counter()  # type: ignore[attr-defined]

    @app.after_request
    async def _drain_body(response: Response) -> Response:
        # A response sent before the request body was read (a refused token, a 404) left
        # the next request on that keep-alive connection unanswered about one time in
        # three under Hypercorn's trio worker (measured: 67 of 200); reading the rest of
        # the body first (bounded by MAX_CONTENT_LENGTH and BODY_TIMEOUT) keeps it usable.
        with contextlib.suppress(HTTPException):
            await request.get_data()
        return response

    @app.after_request
    async def _count(response: Response) -> Response:
        started = getattr(request, "environ_started", None)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if started is not None:
            request_metrics.observe(
                route, request.method, response.status_code, time.perf_counter() - started
            )
        return response


def _answer_errors(app: QuartTrio, settings: HttpSettings) -> None:
    """413, 404 and 405 as JSON (problem documents under ``/api/``)."""

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return _error(413, f"request body larger than {settings.max_body_bytes} bytes")

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return _error(404, "no such route")

    @app.errorhandler(405)
    async def wrong_method(exc: Exception) -> Response:
        response = _error(405, "method not allowed on this route")
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response


def _error(status: int, message: str) -> Response:
    if request.path.startswith("/api/"):
        return problem_response(status, message)
    return _json({"error": message}, status)


def _json(
    body: dict[str, Any],
    status: int,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(json.dumps(body), status=status, content_type=content_type, headers=headers)


def check_can_listen(settings: HttpSettings) -> None:
    """Bind the HTTP address once before anything starts, as Hypercorn will.

    A port in use is the operator's to fix: said in one line, not retried by the
    supervisor until it gives up. Raises ``CannotListen``.
    """
    where = f"{settings.host}:{settings.port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise CannotListen(f"cannot listen on {where}: {reason}") from None


def hypercorn_config(settings: HttpSettings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = settings.graceful_timeout_s
    config.read_timeout = int(max(1, settings.read_timeout_s))
    config.keep_alive_timeout = 5
    config.h11_max_incomplete_size = 16 * 1024
    config.accesslog = None
    # Hypercorn's own messages go through the process's structured logging.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def run_http(
    *,
    app: Any,
    settings: HttpSettings,
    on_bound: Callable[[list[str]], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (the QuartTrio app, maybe behind bare-ASGI routes) until cancelled.

    Cancellation (the supervisor stopping this child) is graceful: the listener
    closes at once and in-flight requests get ``graceful_timeout_s`` to finish.
    The server runs in a shielded scope so that the cancel reaches it as
    hypercorn's own shutdown trigger rather than as a cut.
    """
    config = hypercorn_config(settings)
    stop = trio.Event()
    done = trio.Event()
    serve_scope = trio.CancelScope(shield=True)

    async def serve_shielded(
        *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with serve_scope:
            try:
                await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
            finally:
                done.set()

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve_shielded)
        log.info("http.listening", binds=binds)
        if on_bound is not None:
            on_bound(binds)
        task_status.started()
        try:
            await done.wait()
            raise RuntimeError("the HTTP server stopped by itself")
        finally:
            stop.set()
            with trio.CancelScope(shield=True), trio.move_on_after(settings.graceful_timeout_s + 1):
                await done.wait()
            serve_scope.cancel()
