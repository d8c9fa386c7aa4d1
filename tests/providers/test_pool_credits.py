"""Credit monitoring: keys without credit leave rotation and come back when credit returns."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from structlog.testing import capture_logs

from concierge.protocol import Completion, Outcome
from concierge.providers.keys import KeyState
from tests.providers.pool_helpers import ask_pool, credits_read, running_pool
from tests.providers.scripted import (
    Credit,
    Fail,
    ScriptedCreditAdapter,
    pool_settings,
    provider_settings,
)

pytestmark = pytest.mark.anyio


@pytest.mark.autojump
async def test_a_key_without_credit_leaves_rotation_until_credit_returns() -> None:
    router = ScriptedCreditAdapter("openrouter")
    router.credits["k1"] = Credit(limit=10.0, remaining=0.0, usage=10.0)
    router.credits["k2"] = Credit(limit=10.0, remaining=4.5, usage=5.5)
    settings = pool_settings(
        provider_settings("openrouter", kind="openai", keys=("k1", "k2")), credit_poll_s=60.0
    )
    with capture_logs() as logs:
        async with running_pool([router], settings) as (pool, inbox):
            await credits_read(pool, "openrouter")  # the first poll runs as the pool starts
            for _ in range(4):
                result = await ask_pool(inbox)
                assert isinstance(result, Completion)
            assert router.keys_used == ["k2"] * 4
            keys = pool.statistics().provider("openrouter").keys
            assert [k.state for k in keys] == [KeyState.DISABLED, KeyState.ENABLED]
            assert keys[1].credit is not None
            assert (keys[1].credit.limit, keys[1].credit.remaining, keys[1].credit.usage) == (
                10.0,
                4.5,
                5.5,
            )

            router.credits["k1"] = Credit(limit=20.0, remaining=10.0, usage=10.0)
            await trio.sleep(60.0)
            for _ in range(2):
                await ask_pool(inbox)
    assert router.keys_used[4:] == ["k1", "k2"]
    events = [e["event"] for e in logs]
    assert events.count("provider.credit_exhausted") == 1
    assert events.count("provider.key_disabled") == 1
    assert events.count("provider.credit_restored") == 1
    assert events.count("provider.key_reenabled") == 1


@pytest.mark.autojump
async def test_unlimited_keys_stay_in_rotation() -> None:
    router = ScriptedCreditAdapter("openrouter")
    settings = pool_settings(
        provider_settings("openrouter", kind="openai", keys=("k1", "k2")), credit_poll_s=60.0
    )
    async with running_pool([router], settings) as (pool, inbox):
        await credits_read(pool, "openrouter")
        await ask_pool(inbox)
        await ask_pool(inbox)
    assert router.keys_used == ["k1", "k2"]
    assert router.credit_polls[:2] == ["k1", "k2"]


@pytest.mark.autojump
async def test_a_dead_key_answer_triggers_a_poll_at_once_but_only_a_periodic_poll_reenables() -> (
    None
):
    router = ScriptedCreditAdapter("openrouter")
    router.by_key["k1"] = Fail(outcome=Outcome.DEAD_KEY, detail="402 insufficient credits")
    settings = pool_settings(
        provider_settings("openrouter", kind="openai", keys=("k1", "k2")), credit_poll_s=300.0
    )
    async with running_pool([router], settings) as (pool, inbox):
        await credits_read(pool, "openrouter")
        polls_before = len(router.credit_polls)
        result = await ask_pool(inbox)
        assert isinstance(result, Completion)
        assert result.key_alias == "k2"
        await trio.sleep(1.0)
        assert len(router.credit_polls) == polls_before + 2  # both keys, right after the 402
        assert pool.statistics().provider("openrouter").keys[0].state is KeyState.DISABLED

        del router.by_key["k1"]
        await trio.sleep(300.0)
        assert pool.statistics().provider("openrouter").keys[0].state is KeyState.ENABLED


@pytest.mark.autojump
async def test_a_failing_credit_poll_is_reported_and_changes_nothing() -> None:
    router = ScriptedCreditAdapter("openrouter")

    async def broken(key: object) -> Credit:
        await trio.lowlevel.checkpoint()
        raise ConnectionError("refused")

    settings = pool_settings(
        provider_settings("openrouter", kind="openai", keys=("k1",)), credit_poll_s=60.0
    )
    with capture_logs() as logs:
        async with running_pool([router], settings, credit_fetchers={"openrouter": broken}) as (
            pool,
            inbox,
        ):
            await credits_read(pool, "openrouter")
            result = await ask_pool(inbox)
            key = pool.statistics().provider("openrouter").keys[0]
    assert isinstance(result, Completion)
    assert key.state is KeyState.ENABLED
    assert key.credit is not None
    assert key.credit.error == "ConnectionError: refused"
    assert any(e["event"] == "provider.credit_poll_failed" for e in logs)


@pytest.mark.autojump
async def test_a_key_an_operator_disabled_leaves_rotation_until_they_enable_it() -> None:
    router = ScriptedCreditAdapter("openrouter")
    router.credits["k1"] = Credit(limit=10.0, remaining=5.0, usage=5.0)
    router.credits["k2"] = Credit(limit=10.0, remaining=5.0, usage=5.0)
    settings = pool_settings(
        provider_settings("openrouter", kind="openai", keys=("k1", "k2")), credit_poll_s=60.0
    )
    async with running_pool([router], settings) as (pool, inbox):
        await trio.sleep(0.1)
        disabled = pool.set_key_enabled(
            "openrouter", "k1", enabled=False, by="alice", reason="leaked in a screenshot"
        )
        assert (disabled.state, disabled.disabled_reason, disabled.disabled_by) == (
            KeyState.DISABLED,
            "leaked in a screenshot",
            "alice",
        )
        assert disabled.credit is not None
        await trio.sleep(120.0)  # two periodic polls see credit: the key stays out
        for _ in range(3):
            await ask_pool(inbox)
        assert router.keys_used == ["k2"] * 3
        enabled = pool.set_key_enabled("openrouter", "k1", enabled=True, by="alice")
        assert (enabled.state, enabled.disabled_by) == (KeyState.ENABLED, None)
        for _ in range(2):
            await ask_pool(inbox)
        assert sorted(router.keys_used[3:]) == ["k1", "k2"]
        with pytest.raises(KeyError):
            pool.set_key_enabled("openrouter", "k9", enabled=False, by="alice")
        with pytest.raises(KeyError):
            pool.set_key_enabled("anthropic", "k1", enabled=False, by="alice")
