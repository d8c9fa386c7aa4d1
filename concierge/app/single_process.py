"""SQLite mode is one process: a lock file in the data directory keeps a second daemon out.

``fcntl.flock`` on an open file: the kernel drops it when the process dies (SIGKILL
included), so a crash never leaves a stale lock behind, unlike a PID file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from concierge.app.errors import DataDirInUse

LOCK_NAME = "concierge.lock"


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock for the block; raise ``DataDirInUse`` when another has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(
                f"another daemon already runs on the data directory {data_dir.resolve()} "
                "(SQLite is single-process: stop it, or set DATABASE_URL to run replicas "
                "on PostgreSQL)"
            ) from None
        yield
    finally:
        os.close(fd)
