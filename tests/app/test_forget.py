"""``concierge forget`` run beside a live daemon: every copy of the user's texts goes.

The daemon runs in this process (its memory cache and conversation actors are
inspectable); ``forget`` runs as the operator runs it, in a process of its own, and
the daemon learns of it from the store. The model is a loopback fake, so what the
next turn sends it shows whether anything of the erased conversation came back.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import coredis
import pytest
import trio
from structlog.testing import capture_logs

from tests.app.running import daemon_settings, running_daemon
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("CONCIERGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET_QUESTION = "Je voudrais parler de mon divorce et de mon remariage"


def forget(tmp_path: Path, user: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "concierge", "forget", "--user", user],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "REDIS"))},
            "CONCIERGE_DATA_DIR": str(tmp_path / "var"),
            **env,
        },
        cwd=tmp_path,
    )


def model_texts(fake: FakeAnthropic, index: int) -> str:
    """Everything the model was sent in its ``index``-th request, as one string."""
    return str(fake.requests[index].json)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_forget_reaches_the_live_actor_the_cache_and_the_next_turn(
    tmp_path: Path, backend: str
) -> None:
    user_id = random.randrange(10**8, 10**9)
    user_key = f"telegram:{user_id}"
    redis = {"REDIS_URL": REDIS_URL} if backend == "redis" else {}
    telegram = FakeTelegram()
    async with (
        telegram.serve(),
        FakeAnthropic.serve() as model,
        running_daemon(
            daemon_settings(
                tmp_path,
                TELEGRAM_BOT_TOKEN=telegram.token,
                TELEGRAM_API_BASE_URL=telegram.url,
                TELEGRAM_POLL_TIMEOUT_S="1",
                CONCIERGE_PROVIDERS="anthropic",
                ANTHROPIC_API_KEYS="main=sk-ant-testtesttesttest",
                ANTHROPIC_BASE_URL=model.url,
                **redis,
            )
        ) as rt,
    ):
        telegram.add_update(telegram.text_message(user_id=user_id, text=SECRET_QUESTION))
        await eventually(lambda: len(telegram.texts_to(user_id)) == 1, "the first reply")
        assert SECRET_QUESTION in model_texts(model, 0)
        assert await rt.cache.get_context(user_key) is not None

        with capture_logs() as logs:
            done = await trio.to_thread.run_sync(lambda: forget(tmp_path, user_key, **redis))
            assert done.returncode == 0, done.stderr
            if backend == "redis":  # shared: erased by forget itself, context and buckets
                assert "2 cache entries erased" in done.stdout
                assert await redis_keys_of(user_id) == []
            await eventually(
                lambda: any(e["event"] == "erasure.applied" for e in logs),
                "the daemon to apply the erasure",
            )
        [applied] = [e for e in logs if e["event"] == "erasure.applied"]
        assert applied["actors_stopped"] == 1
        assert any(e["event"] == "conversation.forgotten" for e in logs)
        assert await rt.cache.get_context(user_key) is None

        telegram.add_update(
            telegram.text_message(user_id=user_id, text="A quelle heure est la messe dimanche ?")
        )
        await eventually(lambda: len(telegram.texts_to(user_id)) == 2, "the reply after forget")
        assert len(model.requests) == 2
        assert SECRET_QUESTION not in model_texts(model, 1)
    if backend == "redis":
        async with coredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
            if leftovers := await redis_keys_of(user_id):
                await admin.delete(leftovers)


async def redis_keys_of(user_id: int) -> list[str]:
    async with coredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
        return [k async for k in admin.scan_iter(match=f"concierge:*:{user_id}")]
