"""The erasure watch: a forgotten user's live actor and cache entries go; an outage only waits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from actors import run_erasure_watch
from concierge.protocol import Channel, Erased, ErasureNotice, Role, Turn, person_key
from concierge.store import Store, StoreUnavailable
from concierge.store.cache_memory import MemorySessionCache
from tests.stores import sqlite_store
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


class FlakyNotices:
    """The real store, except that its first ``failures`` polls find it unavailable."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures

    async def erasure_key(self) -> bytes:
        return await self._store.erasure_key()

    async def erasures_after(
        self, erasure_id: int, *, limit: int = 1000
    ) -> Sequence[ErasureNotice]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("postgres: connection refused")
        return await self._store.erasures_after(erasure_id, limit=limit)

    async def erase_texts_before(self, cutoff: datetime) -> int:
        return await self._store.erase_texts_before(cutoff)

    async def forget_user(self, user_id: int) -> Erased:
        return await self._store.forget_user(user_id)


async def test_a_notice_stops_the_actor_and_erases_the_cache_after_an_outage(
    tmp_path: Path,
) -> None:
    async with sqlite_store(tmp_path) as store:
        user = await store.resolve_user(Channel.TELEGRAM, "telegram:42")
        await store.resolve_user(Channel.TELEGRAM, "telegram:43")
        cache = MemorySessionCache()
        for key in ("telegram:42", "telegram:43"):
            await cache.set_context(key, [Turn(role=Role.USER, text="secret")], ttl_s=600)
        live = {"telegram:42": trio.CancelScope(), "telegram:43": trio.CancelScope()}
        flaky = FlakyNotices(store, failures=3)
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(run_erasure_watch, store=flaky, cache=cache, live=live, interval_s=0.01)
                )
                await store.forget_user(user)
                await eventually(lambda: live["telegram:42"].cancel_called, "the actor stopped")
                nursery.cancel_scope.cancel()
        assert not live["telegram:43"].cancel_called
        assert await cache.get_context("telegram:42") is None
        assert await cache.get_context("telegram:43") is not None
        events = [e["event"] for e in logs]
        assert events.count("erasure.poll_skipped") == 1  # said once per outage
        assert events.count("erasure.applied") == 1


async def test_a_linked_persons_actor_and_cache_entries_go_by_the_persons_key(
    tmp_path: Path,
) -> None:
    """Erased through the API (no cache at hand): the watch finds the person's own key."""
    async with sqlite_store(tmp_path) as store:
        user = await store.resolve_user(Channel.TELEGRAM, "telegram:42")
        other = await store.resolve_user(Channel.WAHA, "waha:221770000042@c.us")
        await store.merge_persons(user, other)
        cache = MemorySessionCache()
        person = person_key(user)
        await cache.set_context(person, [Turn(role=Role.USER, text="secret")], ttl_s=600)
        assert await cache.take_token(f"user:{person}", rate_per_s=1.0, burst=5, now=0.0)
        live = {person: trio.CancelScope()}
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_erasure_watch, store=store, cache=cache, live=live, interval_s=0.01)
            )
            await store.forget_user(user)
            await eventually(lambda: live[person].cancel_called, "the person's actor stopped")
            nursery.cancel_scope.cancel()
        assert await cache.get_context(person) is None
        assert await cache.forget(lambda name: True) == 0  # the bucket went too
