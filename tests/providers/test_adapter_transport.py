"""What every HTTP adapter does alike, whatever its wire format: hangs, dead hosts, concurrency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from concierge.protocol import Outcome
from concierge.providers import Adapter, ProviderError, build_adapter
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.llm_common import Scripted, ScriptedServer
from tests.fakes.openai_api import FakeOpenAI
from tests.providers.conftest import KEY, MakeCall, MakeSettings, failure_of

pytestmark = pytest.mark.anyio

FAKES: dict[str, tuple[type[ScriptedServer], str]] = {
    "anthropic": (FakeAnthropic, ""),
    "gemini": (FakeGemini, ""),
    "openai": (FakeOpenAI, "/v1"),
}
"""Each kind's fake and the path its base URL ends with."""


@pytest.fixture(params=sorted(FAKES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def fake(kind: str) -> AsyncIterator[ScriptedServer]:
    async with FAKES[kind][0].serve() as served:
        yield served


@asynccontextmanager
async def adapter_for(kind: str, url: str, make_settings: MakeSettings) -> AsyncIterator[Adapter]:
    adapter = build_adapter(make_settings(kind, url + FAKES[kind][1]))
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_a_hang_past_the_attempt_timeout_is_transient(
    kind: str, fake: ScriptedServer, make_settings: MakeSettings, make_call: MakeCall
) -> None:
    fake.push(Scripted(hang=True))
    async with adapter_for(kind, fake.url, make_settings) as adapter:
        error = await failure_of(adapter, make_call, timeout_s=0.3)
        assert error.outcome is Outcome.TRANSIENT
        with trio.fail_after(5):
            await fake.wait_idle()  # the fake saw the client give up
        assert (await adapter.complete(make_call(), KEY)).text  # and the adapter still works


async def test_nothing_listening_is_transient(
    kind: str, make_settings: MakeSettings, make_call: MakeCall
) -> None:
    async with FAKES[kind][0].serve() as gone:
        url = gone.url
    async with adapter_for(kind, url, make_settings) as adapter:
        with pytest.raises(ProviderError) as caught:
            await adapter.complete(make_call(), KEY)
    assert caught.value.outcome is Outcome.TRANSIENT


async def test_a_hundred_calls_are_in_flight_at_once(
    kind: str, fake: ScriptedServer, make_settings: MakeSettings, make_call: MakeCall
) -> None:
    fake.hold()
    replies: list[str] = []
    async with adapter_for(kind, fake.url, make_settings) as adapter:

        async def one() -> None:
            replies.append((await adapter.complete(make_call(timeout_s=30), KEY)).text)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(one)
                await fake.wait_in_flight(100)
                fake.release()
    assert len(replies) == 100
    assert fake.max_in_flight == 100
