"""Without ``CONCIERGE_JWT_KEYS`` the operator API and the console are off, and ``/health`` says so."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.app.test_channels_e2e import daemon

pytestmark = pytest.mark.anyio


async def test_without_keys_nothing_is_served_and_health_says_why(tmp_path: Path) -> None:
    async with daemon(tmp_path) as rt, httpx.AsyncClient(base_url=rt.http_binds[0]) as client:
        health = (await client.get("/health")).json()
        (check,) = health["checks"]["operatorApi:enabled"]
        assert (check["status"], check["observedValue"]) == ("pass", False)
        assert "CONCIERGE_JWT_KEYS is unset" in check["output"]
        for path in ("/api/v1/me", "/api/v1/openapi.json", "/console"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/api/v1/me")).headers[
            "content-type"
        ] == "application/problem+json"
