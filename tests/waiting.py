"""Waiting in tests for something to happen: one bounded poll that says what it waited for,
and the store condition that says no further reply can go out."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import trio

from concierge.protocol import Channel, utcnow
from concierge.store import Store

__all__ = ["eventually", "owes_nothing"]


async def eventually(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]],
    awaited: str,
    *,
    timeout_s: float = 60.0,
    step_s: float = 0.02,
) -> None:
    """Return once ``condition()`` (sync or async) is true; fail naming ``awaited`` if it never is.

    The budget is real time, not trio time: on an autojumping MockClock, trio time races
    ahead while a store call runs in a worker thread (a slow fsync can be worth minutes
    of it), so a trio-time budget would run out before the awaited thing had its chance.
    The steps between checks are trio sleeps, so virtual time still moves on a MockClock.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout_s:g} s waiting for {awaited}")
        await trio.sleep(step_s)


def owes_nothing(store: Store) -> Callable[[], Awaitable[bool]]:
    """A condition: every accepted message is processed and every reply recorded as sent.

    Once it holds (and nothing new comes in) no further reply can go out: a test that
    checks "answered once" waits on it instead of giving a duplicate time to show up.
    """

    async def check() -> bool:
        if await store.pending_inbox(limit=1):
            return False
        later = utcnow() + timedelta(days=1)  # rows waiting for a retry count too
        for channel in Channel:
            if await store.pending_outbox(channel, now=later, limit=1):
                return False
        return True

    return check
