"""Fixtures for channel tests: a loopback fake WAHA and a client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from concierge.channels import WahaClient
from tests.fakes.waha_api import FakeWaha

WAHA_API_KEY = "waha-test-key"


@pytest.fixture
async def fake_waha() -> AsyncIterator[FakeWaha]:
    async with FakeWaha.serve(api_key=WAHA_API_KEY) as fake:
        yield fake


@pytest.fixture
async def waha_client(fake_waha: FakeWaha) -> AsyncIterator[WahaClient]:
    async with httpx2.AsyncClient(timeout=5.0) as http:
        yield WahaClient(http=http, base_url=fake_waha.url, session="default", api_key=WAHA_API_KEY)
