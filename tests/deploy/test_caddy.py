"""The shipped Caddyfile, run by the real Caddy on loopback (``tls internal``) in front of a
real daemon process: what the public edge lets through (the webhooks, the operator API,
the staff console), answers and writes to its log.

Only environment variables differ from production: the domain (``localhost:<port>``),
the issuer (Caddy's local CA instead of ACME), high ports, no admin endpoint, and
shorter body timeouts (Caddy's still longer than the daemon's, as in production).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio

from concierge.app.api import Role, issue_token
from concierge.app.console import CONTENT_SECURITY_POLICY
from concierge.channels.waha_signature import sign
from concierge.protocol import utcnow
from concierge.settings import load_settings
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.waha_api import WahaWebhookPusher, message_event
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
HMAC_KEY = "caddy-test-hmac-key-0123456789"
TELEGRAM_SECRET = "caddy-test_Telegram-secret-0123456789"
JWT_KEYS = "edge=" + "e" * 40
SECRET_HEADERS = ("X-Telegram-Bot-Api-Secret-Token", "X-Webhook-Hmac", "Authorization")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        child = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


@attrs.frozen
class Edge:
    base: str
    port: int
    ca: Path
    caddy_log: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@asynccontextmanager
async def edge(
    tmp_path: Path, telegram: FakeTelegram, *, other_upstreams: Sequence[str] = ()
) -> AsyncIterator[Edge]:
    """Caddy in front of one daemon, and of ``other_upstreams`` as more replicas."""
    caddy = shutil.which("caddy")
    assert caddy, "the Caddy test needs Debian's caddy: apt-get install caddy (.ci/run does)"
    daemon_port, https_port, http_port = free_port(), free_port(), free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "WAHA_"))}
    base_env.pop("DATABASE_URL", None)
    base_env.pop("REDIS_URL", None)
    daemon_env = base_env | {
        "CONCIERGE_HTTP_PORT": str(daemon_port),
        "CONCIERGE_HTTP_READ_TIMEOUT_S": "1",
        "CONCIERGE_DATA_DIR": str(tmp_path / "var"),
        "CONCIERGE_LOG_FORMAT": "json",
        "WAHA_URL": "http://127.0.0.1:9",  # outbound calls fail; webhooks do not need them
        "WAHA_API_KEY": "waha-api-key-for-the-test",
        "WAHA_WEBHOOK_HMAC_KEY": HMAC_KEY,
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_API_BASE_URL": telegram.url,
        "TELEGRAM_MODE": "webhook",
        "TELEGRAM_WEBHOOK_URL": f"https://localhost:{https_port}/webhooks/telegram",
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "CONCIERGE_JWT_KEYS": JWT_KEYS,
    }
    caddy_env = base_env | {
        "CONCIERGE_DOMAIN": f"localhost:{https_port}",
        "CONCIERGE_UPSTREAMS": " ".join([*other_upstreams, f"127.0.0.1:{daemon_port}"]),
        "CONCIERGE_TLS_ISSUER": "internal",
        "CADDY_HTTP_PORT": str(http_port),
        "CADDY_HTTPS_PORT": str(https_port),
        "CADDY_ADMIN": "off",
        "CADDY_INTERNAL_PORT": str(free_port()),
        "CADDY_READ_BODY_TIMEOUT": "4s",
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
    }
    caddy_log = tmp_path / "caddy.log"
    daemon = [sys.executable, "-m", "concierge", "run"]
    proxy = [caddy, "run", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"]
    with (
        process(daemon, env=daemon_env, cwd=tmp_path, log=tmp_path / "daemon.log"),
        process(proxy, env=caddy_env, cwd=tmp_path, log=caddy_log),
    ):
        ca = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        found = Edge(
            base=f"https://localhost:{https_port}", port=https_port, ca=ca, caddy_log=caddy_log
        )
        try:
            await eventually(routed(found), "Caddy to route a webhook to the daemon")
            yield found
        except BaseException:
            for name in ("daemon.log", "caddy.log"):  # shown by pytest with the failure
                print(f"--- {name}\n{(tmp_path / name).read_text()[-4000:]}")
            raise


def routed(found: Edge) -> Callable[[], Awaitable[bool]]:
    """A condition: a webhook reaches the daemon through Caddy (its health check passed)."""

    async def check() -> bool:
        try:
            context = found.context()  # Caddy may still be writing its root certificate
        except (OSError, ssl.SSLError):
            return False
        try:
            async with httpx.AsyncClient(verify=context, timeout=5) as http:
                answer = await http.post(f"{found.base}/webhooks/waha", content=b"{}")
        except httpx.TransportError:
            return False
        return answer.status_code == 401  # the daemon's refusal of an unsigned body

    return check


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """The negotiated protocol, or the error, for a client limited to ``version``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old versions
    with warnings.catch_warnings():  # naming TLS 1.0 and 1.1 is deprecated: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except ssl.SSLError as exc:
            return f"refused: {exc.reason}"


def partial_post(found: Edge, path: str, *, length: int = 100, sent: bytes = b"{") -> bytes:
    """Declare a ``length``-byte body, send ``sent`` of it, then nothing; return the answer."""
    context = found.context()
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", found.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost:{found.port}\r\n"
            f"{SECRET_HEADERS[0]}: {TELEGRAM_SECRET}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + sent
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return answer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Edge, FakeTelegram]]:
    telegram = FakeTelegram()
    async with telegram.serve(), edge(tmp_path, telegram) as found:
        yield found, telegram


async def test_the_edge_refuses_old_tls_and_keeps_probes_and_metrics_private(
    served: tuple[Edge, FakeTelegram],
) -> None:
    found, _ = served
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        result = await trio.to_thread.run_sync(handshake, found.port, old)
        assert result.startswith("refused"), (old, result)
    assert await trio.to_thread.run_sync(handshake, found.port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    async with httpx.AsyncClient(verify=found.context(), timeout=10) as http:
        for private in ("/livez", "/readyz", "/health", "/metrics", "/apis", "/consoles"):
            answer = await http.get(found.base + private)
            assert (answer.status_code, answer.text) == (404, "not found"), private
        refused = await http.post(f"{found.base}/webhooks/waha", content=b"{}")
    for answer in (refused, await_last(found)):
        headers = answer.headers
        assert headers["strict-transport-security"].startswith("max-age=31536000")
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert "server" not in headers


async def test_the_operator_api_and_the_console_pass_through_with_their_own_policy(
    served: tuple[Edge, FakeTelegram],
) -> None:
    found, _ = served
    settings = load_settings({"CONCIERGE_JWT_KEYS": JWT_KEYS})
    token = issue_token(settings.api, subject="edge", role=Role.STAFF, ttl_s=600, now=utcnow())
    async with httpx.AsyncClient(verify=found.context(), timeout=10) as http:
        page = await http.get(f"{found.base}/console")
        document = await http.get(f"{found.base}/api/v1/openapi.json")
        refused = await http.get(f"{found.base}/api/v1/me")
        me = await http.get(f"{found.base}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert page.headers.get_list("content-security-policy") == [CONTENT_SECURITY_POLICY]
    assert page.headers["strict-transport-security"].startswith("max-age=31536000")
    assert document.json()["openapi"] == "3.1.0"
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert me.json()["subject"] == "edge"
    for answer in (document, refused, me):
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers.get_list("content-security-policy") == [
            "default-src 'none'; frame-ancestors 'none'"
        ]
    await eventually(
        lambda: "/api/v1/me" in found.caddy_log.read_text(), "Caddy to log the API requests"
    )
    assert token not in found.caddy_log.read_text()


def await_last(found: Edge) -> httpx.Response:
    """A 404 of Caddy's own, fetched synchronously (its headers are checked too)."""
    with httpx.Client(verify=found.context(), timeout=10) as http:
        return http.get(found.base + "/nowhere")


async def test_signed_webhooks_pass_through_and_the_edge_answers_limits(
    served: tuple[Edge, FakeTelegram],
) -> None:
    found, telegram = served
    async with httpx.AsyncClient(verify=found.context(), timeout=30) as http:
        pusher = WahaWebhookPusher.over_http(http, f"{found.base}/webhooks/waha", hmac_key=HMAC_KEY)
        delivery = await pusher.deliver(message_event(chat_id="221771234567@c.us", text="Bonjour"))
        assert delivery.statuses == [200]
        assert json.loads(delivery.attempts[0].body)["status"] == "accepted"
        update = telegram.text_message(user_id=424242, text="Bonjour")
        accepted = await http.post(
            f"{found.base}/webhooks/telegram",
            json=update,
            headers={SECRET_HEADERS[0]: TELEGRAM_SECRET},
        )
        assert accepted.status_code == 200
    for path in ("/webhooks/telegram", "/webhooks/waha"):  # answered before the body is read
        over = partial(partial_post, length=2_000_000, sent=b"")
        answer = await trio.to_thread.run_sync(over, found, path)
        assert answer.startswith(b"HTTP/1.1 413 "), (path, answer[:200])
        assert b"\r\nX-Frame-Options: DENY\r\n" in answer
    for path in ("/webhooks/telegram", "/webhooks/waha"):
        answer = await trio.to_thread.run_sync(partial_post, found, path)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 600, (path, answer[:200])  # never an empty 200: it is retried


async def test_secret_headers_never_reach_caddys_log(served: tuple[Edge, FakeTelegram]) -> None:
    found, telegram = served
    async with httpx.AsyncClient(verify=found.context(), timeout=30) as http:
        update = telegram.text_message(user_id=515151, text="Bonjour")
        await http.post(
            f"{found.base}/webhooks/telegram",
            json=update,
            headers={SECRET_HEADERS[0]: TELEGRAM_SECRET, "Authorization": "Bearer sekret-bearer"},
        )
        pusher = WahaWebhookPusher.over_http(http, f"{found.base}/webhooks/waha", hmac_key=HMAC_KEY)
        event = message_event()
        await pusher.deliver(event)
    await trio.to_thread.run_sync(partial_post, found, "/webhooks/telegram")  # an error entry

    def logged() -> list[dict[str, Any]]:
        lines = found.caddy_log.read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e.get("request", {}).get("uri", "").startswith("/webhooks/")]

    # The requests are logged, access and error alike...
    await eventually(lambda: len(logged()) >= 4, "Caddy to log the four requests")
    text = found.caddy_log.read_text()
    for entry in logged():  # ...without their secret headers
        assert not set(SECRET_HEADERS) & set(entry["request"]["headers"])
    signature = sign(WahaWebhookPusher.encode(event), HMAC_KEY)
    for secret in (TELEGRAM_SECRET, "sekret-bearer", HMAC_KEY, signature):
        assert secret not in text


def adapt(**env: str) -> subprocess.CompletedProcess[str]:
    caddy = shutil.which("caddy")
    assert caddy, "the Caddy test needs Debian's caddy: apt-get install caddy (.ci/run does)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "CADDY_"))}
    return subprocess.run(
        [caddy, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_without_a_domain_caddy_refuses_the_file_naming_the_variable() -> None:
    result = adapt()
    assert result.returncode != 0
    assert "CONCIERGE_DOMAIN-is-not-set" in result.stderr


def test_the_upstreams_are_the_compose_replicas_unless_told_otherwise() -> None:
    default = adapt(CONCIERGE_DOMAIN="concierge.example.org")
    assert default.returncode == 0, default.stderr
    assert '"upstreams":[{"dial":"concierge-1:8000"},{"dial":"concierge-2:8000"}]' in default.stdout
    assert '"module":"acme"' in default.stdout
    moved = adapt(
        CONCIERGE_DOMAIN="concierge.example.org", CONCIERGE_UPSTREAMS="10.1.2.3:9000 10.1.2.4:9000"
    )
    assert '"upstreams":[{"dial":"10.1.2.3:9000"},{"dial":"10.1.2.4:9000"}]' in moved.stdout


class Replica:
    """A stand-in replica: ``/readyz`` answers 200 while ``ready``, 503 otherwise; any other
    request the same status with an empty JSON body. Every answer closes its connection,
    so once the listener stops Caddy has no pooled connection to it."""

    def __init__(self, *, ready: bool) -> None:
        self.ready = ready
        self.probes = 0
        self.routed = 0
        self.port = free_port()
        self._scope = trio.CancelScope()

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop_listening(self) -> None:
        self._scope.cancel()

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[Replica]:
        async with trio.open_nursery() as nursery:

            async def listen(*, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
                with self._scope:
                    await trio.serve_tcp(
                        self._answer, self.port, host="127.0.0.1", task_status=task_status
                    )

            await nursery.start(listen)
            yield self
            nursery.cancel_scope.cancel()

    async def _answer(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.Request):
                    if event.target.startswith(b"/readyz"):
                        self.probes += 1
                    else:
                        self.routed += 1
                elif isinstance(event, h11.EndOfMessage):
                    headers = [("content-length", "2"), ("connection", "close")]
                    status = 200 if self.ready else 503
                    response = h11.Response(status_code=status, headers=headers)
                    await stream.send_all(connection.send(response))
                    await stream.send_all(connection.send(h11.Data(data=b"{}")))
                    await stream.send_all(connection.send(h11.EndOfMessage()))
                    return


async def test_requests_go_to_a_ready_replica_when_another_is_not_ready_or_refuses(
    tmp_path: Path,
) -> None:
    telegram = FakeTelegram()
    stopping, not_ready = Replica(ready=True), Replica(ready=False)
    async with (
        telegram.serve(),
        stopping.serve(),
        not_ready.serve(),
        edge(tmp_path, telegram, other_upstreams=[stopping.upstream, not_ready.upstream]) as found,
        httpx.AsyncClient(verify=found.context(), timeout=30) as http,
    ):
        await eventually(
            lambda: stopping.probes > 0 and not_ready.probes > 0, "Caddy to probe both replicas"
        )
        routed_before = not_ready.routed
        # The replica whose /readyz fails gets nothing: the webhooks go to the other two
        # (the daemon's 401 for an unsigned body, the stand-in's 200).
        webhooks = [await http.post(f"{found.base}/webhooks/waha", content=b"{}") for _ in range(9)]
        assert {a.status_code for a in webhooks} <= {200, 401}
        assert not_ready.routed == routed_before
        # A replica Caddy last saw ready stops listening (it crashed between two health
        # checks): the requests sent to it are refused and tried on the daemon.
        stopping.stop_listening()
        documents = [await http.get(f"{found.base}/api/v1/openapi.json") for _ in range(9)]
    assert [a.status_code for a in documents] == [200] * 9
    assert all(a.json().get("openapi") == "3.1.0" for a in documents)  # the daemon's own
