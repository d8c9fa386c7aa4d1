"""The daemon's tree built as ``concierge run`` builds it, running in the test's own process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from concierge.app.runtime import Runtime, enabled_channels, open_runtime
from concierge.app.tree import build_messenger_tree
from concierge.settings import Settings, load_settings


def daemon_settings(tmp_path: Path, **env: str) -> Settings:
    """The daemon's settings from ``env`` over a data directory in ``tmp_path`` and any HTTP port
    (the knowledge, prompts and triage rules: the defaults shipped in the package)."""
    return load_settings(
        {
            "CONCIERGE_DATA_DIR": str(tmp_path / "var"),
            "CONCIERGE_HTTP_PORT": "0",
            "CONCIERGE_LOG_LEVEL": "warning",
            **env,
        },
        env_file=tmp_path / "absent.env",
    )


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Runtime]:
    """Every channel the settings enable, the HTTP server included; shut down on exit."""
    async with open_runtime(
        settings, channels=enabled_channels(settings, console=False), messengers=True
    ) as rt:
        root = build_messenger_tree(rt)
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            yield rt
            await root.shutdown()
