"""A private redis-server on a free loopback port, for tests that kill, restart or pause it.

Nothing on disk (``--save ''``, no AOF); it lives in a temporary directory.
``command`` speaks just enough RESP over a fresh socket to administer it without
going through the client under test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import trio

from tests.waiting import eventually

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(*args: str | int) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PrivateRedis:
    """One redis-server process; ``start``/``kill``/``restart`` keep the same port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self._process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, timeout_s: float = 10.0) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self._process = await trio.lowlevel.open_process(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self._process

        async def answering() -> bool:
            if process.returncode is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                return await self.command("PING") == b"+PONG"
            except OSError:
                return False

        await eventually(answering, f"redis-server on port {self.port}", timeout_s=timeout_s)

    async def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye, as in a crash."""
        if self._process is None:
            return
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await self._process.wait()
        self._process = None

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def command(self, *args: str | int, timeout_s: float = 5.0) -> bytes:
        """Send one command on a fresh connection; return the first reply line (``+PONG``)."""
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                await stream.send_all(_encode(*args))
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    reply += chunk
                return reply.split(b"\r\n", 1)[0]

    async def aclose(self) -> None:
        await self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)
