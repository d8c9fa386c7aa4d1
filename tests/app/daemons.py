"""Daemons as real processes on one PostgreSQL database, answering Telegram webhooks.

Shared by the drain and rolling-restart tests: a fresh database per test (migrated
by ``concierge migrate`` as a deploy does), a fake Bot API, an OpenAI-compatible
fake that echoes a marker from each message, and a webhook sender that records
every answer (a status, or 0 for a refused connection).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_asyncio

from concierge.store.postgres import execute_admin
from tests.app.test_cli import env_for, free_port
from tests.fakes.llm_common import Received, Scripted
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

ADMIN_DSN = os.environ.get("CONCIERGE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "drain-test_webhook-secret-0123456789"
MARKER = re.compile(r"m-\d+-\d+")
USER_BASE = 610_000_000


class EchoOpenAI(FakeOpenAI):
    """Answers each chat completion with the marker found in the user's latest message."""

    def success_body(self, reply: Scripted, request: Received) -> Any:
        messages = (request.json or {}).get("messages", [])
        latest = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        found = MARKER.findall(str(latest))
        echoed = Scripted(text=f"Bien reçu {found[-1] if found else '?'}.", delay_s=reply.delay_s)
        return super().success_body(echoed, request)


def marker(user: int, n: int) -> str:
    return f"m-{user}-{n}"


def replies_to(telegram: FakeTelegram, user: int) -> list[str]:
    """The markers the user's replies echo, in the order Telegram received them."""
    return [m for t in telegram.texts_to(USER_BASE + user) for m in MARKER.findall(t)]


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The DSN of a new database, dropped afterwards."""
    name = f"concierge_daemons_{secrets.token_hex(4)}"
    async with trio_asyncio.open_loop():
        try:
            await execute_admin(ADMIN_DSN, f'CREATE DATABASE "{name}"')
        except OSError as exc:
            pytest.fail(f"PostgreSQL at {ADMIN_DSN} is not reachable: {exc}")
        base, _, _ = ADMIN_DSN.rpartition("/")
        try:
            yield f"{base}/{name}"
        finally:
            with trio.CancelScope(shield=True):
                await execute_admin(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@attrs.define
class Daemon:
    """One ``concierge run`` process; ``log`` holds its JSON log lines."""

    name: str
    port: int
    env: dict[str, str]
    cwd: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "concierge", "run"],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid_file.parent.mkdir(exist_ok=True)
        self.pid_file.write_text(f"{self.process.pid}\n")

    @property
    def pid_file(self) -> Path:
        return self.cwd / "pids" / f"{self.name}.pid"

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        process = self.process
        await eventually(
            lambda: process.poll() is not None, f"{self.name} to exit", timeout_s=timeout_s
        )
        return int(process.returncode)

    async def ready(self, client: httpx.AsyncClient) -> bool:
        try:
            return (await client.get(f"{self.base}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
        return found

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def daemon_env(
    tmp_path: Path, *, port: int, dsn: str, telegram: FakeTelegram, llm: FakeOpenAI, **extra: str
) -> dict[str, str]:
    return env_for(
        tmp_path,
        DATABASE_URL=dsn,
        CONCIERGE_HTTP_PORT=str(port),
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_MODE="webhook",
        TELEGRAM_WEBHOOK_URL="https://concierge.example.org/webhooks/telegram",
        TELEGRAM_WEBHOOK_SECRET=SECRET,
        CONCIERGE_PROVIDERS="echo",
        ECHO_KIND="openai",
        ECHO_BASE_URL=f"{llm.url}/v1",
        ECHO_API_KEYS="k1",
        ECHO_MODEL="echo-1",
        CONCIERGE_USER_RATE_PER_MIN="600",
        CONCIERGE_USER_BURST="50",
        CONCIERGE_CONVERSATION_QUEUE="16",
        CONCIERGE_LOG_LEVEL="info",
        **extra,
    )


@contextmanager
def daemons(
    tmp_path: Path,
    names: list[str],
    *,
    dsn: str,
    telegram: FakeTelegram,
    llm: FakeOpenAI,
    **extra: str,
) -> Iterator[list[Daemon]]:
    """Daemons (not started) on one migrated database; killed if the test leaves them running."""
    migrate_env = env_for(tmp_path, DATABASE_URL=dsn)
    subprocess.run(
        [sys.executable, "-m", "concierge", "migrate"],
        env=migrate_env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = []
    for name in names:
        port = free_port()
        env = daemon_env(tmp_path, port=port, dsn=dsn, telegram=telegram, llm=llm, **extra)
        made.append(
            Daemon(name=name, port=port, env=env, cwd=tmp_path, log=tmp_path / f"{name}.log")
        )
    try:
        yield made
    except BaseException:
        for daemon in made:  # shown by pytest with the failure
            if daemon.log.exists():
                print(f"--- {daemon.name}.log\n{daemon.log.read_text()[-6000:]}")
        raise
    finally:
        for daemon in made:
            daemon.kill()


@attrs.define
class Sent:
    """One webhook delivery: the update's marker and what answered (0: connection refused)."""

    user: int
    n: int
    status: int
    at: float


@attrs.define
class Sender:
    """Posts updates to a webhook URL, one attempt each, and records every answer."""

    telegram: FakeTelegram
    client: httpx.AsyncClient
    results: list[Sent] = attrs.field(factory=list)

    def update(self, user: int, n: int) -> dict[str, Any]:
        return self.telegram.text_message(
            user_id=USER_BASE + user, text=f"Question {marker(user, n)} sur les horaires, svp"
        )

    async def post(self, url: str, user: int, n: int) -> Sent:
        try:
            answer = await self.client.post(
                url,
                json=self.update(user, n),
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
            status = answer.status_code
        except httpx.TransportError:
            status = 0
        sent = Sent(user=user, n=n, status=status, at=trio.current_time())
        self.results.append(sent)
        return sent

    def accepted(self) -> list[Sent]:
        return [s for s in self.results if s.status == 200]


ROOT = Path(__file__).parents[2]


@attrs.frozen
class Edge:
    """The shipped Caddyfile run by the real Caddy (``tls internal``) in front of replicas."""

    base: str
    ca: Path
    log: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self.ca)), timeout=30)


@asynccontextmanager
async def caddy_in_front(tmp_path: Path, upstreams: list[str]) -> AsyncIterator[Edge]:
    caddy = shutil.which("caddy")
    assert caddy, "this test needs Debian's caddy: apt-get install caddy (.ci/run does)"
    https_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "CADDY_"))}
    env |= {
        "CONCIERGE_DOMAIN": f"localhost:{https_port}",
        "CONCIERGE_UPSTREAMS": " ".join(upstreams),
        "CONCIERGE_TLS_ISSUER": "internal",
        "CADDY_HTTP_PORT": str(free_port()),
        "CADDY_HTTPS_PORT": str(https_port),
        "CADDY_INTERNAL_PORT": str(free_port()),
        "CADDY_ADMIN": "off",
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
    }
    log = tmp_path / "caddy.log"
    args = [caddy, "run", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"]
    process = _spawn(args, env=env, cwd=tmp_path, log=log)
    ca = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    try:
        # Whole: the file exists a moment before its certificate is written.
        await eventually(
            lambda: ca.exists() and b"-----END CERTIFICATE-----" in ca.read_bytes(),
            "Caddy to write its local CA",
        )
        yield Edge(base=f"https://localhost:{https_port}", ca=ca, log=log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _spawn(
    args: list[str], *, env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
