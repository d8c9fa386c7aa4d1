"""The HTTP app: probes, the health report's format and semantics, metrics, limits."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import pytest
import structlog
import trio
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from quart import Blueprint, Response

from actors import OutboxStats
from concierge.app.http import create_app
from concierge.observability import Check, HealthBoard, Status
from concierge.protocol import Channel, new_correlation_id
from concierge.settings import HttpSettings
from supervisors import ChildSpec, Supervisor
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SETTINGS = HttpSettings(
    host="127.0.0.1", port=0, max_body_bytes=2048, read_timeout_s=5, graceful_timeout_s=1
)


class Component:
    def __init__(self, status: Status) -> None:
        self.status = status

    def health_checks(self) -> Iterable[Check]:
        yield Check(
            component="thing",
            measurement="responseTime",
            status=self.status,
            observed_value=0.002,
            observed_unit="s",
            component_type="datastore",
            output=None if self.status is Status.PASS else "thing is unwell",
        )

    def metrics(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("concierge_thing_up", "1 when the thing is up")
        gauge.add_metric([], 1.0 if self.status is Status.PASS else 0.0)
        yield gauge


async def idle_child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


@pytest.mark.parametrize(
    ("status", "code"), [(Status.PASS, 200), (Status.WARN, 200), (Status.FAIL, 503)]
)
async def test_health_status_maps_to_http_code_and_media_type(status: Status, code: int) -> None:
    board = HealthBoard(version="1.2.3")
    board.register(Component(status))
    client = create_app(board=board, settings=SETTINGS).test_client()
    response = await client.get("/health")
    assert response.status_code == code
    assert response.headers["Content-Type"] == "application/health+json"
    body = await response.get_json()
    assert body["status"] == status.value
    (check,) = body["checks"]["thing:responseTime"]
    assert check["componentType"] == "datastore"
    assert check["observedUnit"] == "s"
    if status is not Status.PASS:
        assert body["notes"] == ["thing:responseTime: thing is unwell"]


async def test_readiness_follows_permanent_children_and_draining() -> None:
    board = HealthBoard(version="1")
    root = Supervisor(name="root", children=[ChildSpec(id="idle", start=idle_child)])
    board.watch_supervisor(root.statistics)
    client = create_app(board=board, settings=SETTINGS).test_client()
    not_started = await client.get("/readyz")
    assert not_started.status_code == 503
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/livez")).status_code == 200
        health = await (await client.get("/health")).get_json()
        assert health["checks"]["supervisor.root:restarts"][0]["children"][0]["id"] == "idle"
        board.draining = True
        draining = await client.get("/readyz")
        assert draining.status_code == 503
        assert (await draining.get_json())["reasons"] == ["shutting down"]
        assert (await client.get("/livez")).status_code == 200
        await root.shutdown()


async def test_a_failing_datastore_makes_the_daemon_not_ready() -> None:
    board = HealthBoard(version="1")
    board.register(Component(Status.FAIL))
    response = await create_app(board=board, settings=SETTINGS).test_client().get("/readyz")
    assert response.status_code == 503
    assert "thing:responseTime is failing" in (await response.get_json())["reasons"]


async def test_metrics_expose_components_requests_and_process() -> None:
    board = HealthBoard(version="1")
    board.register(Component(Status.PASS))
    client = create_app(board=board, settings=SETTINGS).test_client()
    await client.get("/livez")
    await client.get("/nope")
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = await response.get_data(as_text=True)
    assert "concierge_thing_up 1.0" in text
    assert 'concierge_http_requests_total{method="GET",route="/livez",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "process_resident_memory_bytes" in text
    assert "concierge_http_request_duration_seconds_bucket" in text


async def test_a_body_over_the_limit_is_refused_with_413() -> None:
    from quart import Blueprint, request

    hook = Blueprint("hook", __name__)

    @hook.post("/hook")
    async def receive() -> str:
        await request.get_data()
        return "ok"

    app = create_app(board=HealthBoard(version="1"), settings=SETTINGS, blueprints=[hook])
    client = app.test_client()
    assert (await client.post("/hook", data=b"x" * 100)).status_code == 200
    response = await client.post("/hook", data=b"x" * 4096)
    assert response.status_code == 413
    assert "2048" in (await response.get_json())["error"]


async def test_served_app_answers_on_a_socket_and_lets_in_flight_requests_finish() -> None:
    import httpx
    from quart import Blueprint

    from concierge.app.http import run_http

    slow = Blueprint("slow", __name__)
    entered, release = trio.Event(), trio.Event()

    @slow.get("/slow")
    async def slow_route() -> str:
        entered.set()
        await release.wait()
        return "done"

    app = create_app(board=HealthBoard(version="1"), settings=SETTINGS, blueprints=[slow])
    binds: list[str] = []
    results: list[int] = []
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with server_scope:
                await run_http(
                    app=app, settings=SETTINGS, on_bound=binds.extend, task_status=task_status
                )

        await nursery.start(serve)
        base = binds[0]
        assert (await client.get(f"{base}/livez")).status_code == 200

        async def call_slow() -> None:
            results.append((await client.get(f"{base}/slow")).status_code)

        nursery.start_soon(call_slow)
        await entered.wait()
        server_scope.cancel()  # the supervisor stopping the child
        await eventually(refuses_connections(base), "the listener to close")
        release.set()  # the request still in flight may now finish
    assert results == [200]


def refuses_connections(base: str) -> Callable[[], Awaitable[bool]]:
    """A condition: nothing accepts a new TCP connection at ``base`` any more."""
    url = urlsplit(base)
    host, port = url.hostname or "", url.port or 80

    async def check() -> bool:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return True
        await stream.aclose()
        return False

    return check


async def test_correlation_ids_are_minted_by_the_server_and_a_client_id_kept_apart() -> None:
    probe = Blueprint("probe", __name__)

    @probe.get("/probe")
    async def bound() -> Response:
        return Response(
            json.dumps(structlog.contextvars.get_contextvars()), content_type="application/json"
        )

    client = create_app(board=HealthBoard(version="1"), settings=SETTINGS, blueprints=[probe])
    test_client = client.test_client()
    forged = await (
        await test_client.get("/probe", headers={"X-Request-Id": "forged-id"})
    ).get_json()
    assert forged["correlation_id"] != "forged-id"
    assert len(forged["correlation_id"]) == len(new_correlation_id())
    assert forged["client_request_id"] == "forged-id"
    other = await (await test_client.get("/probe", headers={"X-Request-Id": "x" * 65})).get_json()
    assert "client_request_id" not in other
    assert other["correlation_id"] != forged["correlation_id"]
    spaced = await (await test_client.get("/probe", headers={"X-Request-Id": "a b"})).get_json()
    assert "client_request_id" not in spaced


async def test_metrics_expose_one_family_per_name_with_the_channel_as_a_label() -> None:
    board = HealthBoard(version="1")
    for channel in (Channel.TELEGRAM, Channel.WAHA):
        stats = OutboxStats(channel=channel)
        stats.sent = 3 if channel is Channel.TELEGRAM else 5
        board.register(stats)
    client = create_app(board=board, settings=SETTINGS).test_client()
    await client.get("/livez")
    text = await (await client.get("/metrics")).get_data(as_text=True)
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sent = families["concierge_outbox_sent"]
    assert {s.labels["channel"]: s.value for s in sent.samples if s.name.endswith("_total")} == {
        "telegram": 3.0,
        "waha": 5.0,
    }
    assert {"concierge_outbox_backlog", "concierge_http_requests", "process_cpu_seconds"} <= set(
        families
    )


async def test_a_refusal_sent_before_the_body_was_read_keeps_the_connection_usable() -> None:
    from quart import Blueprint, Response

    from concierge.app.http import run_http

    guarded = Blueprint("guarded", __name__)

    @guarded.post("/guarded")
    async def refuse() -> Response:  # answers without reading the body, as a bad token does
        return Response("no", status=401)

    app = create_app(board=HealthBoard(version="1"), settings=SETTINGS, blueprints=[guarded])
    binds: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_http(app=app, settings=SETTINGS, on_bound=binds.extend))
        while not binds:
            await trio.sleep(0.01)
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        # The body comes after the route could have answered, then the next request on the
        # same connection: both must be answered.
        await stream.send_all(
            b"POST /guarded HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 13\r\n\r\n"
        )
        await trio.sleep(0.2)
        await stream.send_all(b'{"text": "x"}')
        await stream.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with trio.move_on_after(5):
            while b'{"status": "pass"}' not in received:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                received += chunk
        await stream.aclose()
        assert received.startswith(b"HTTP/1.1 401")
        assert b"HTTP/1.1 200" in received
        nursery.cancel_scope.cancel()
