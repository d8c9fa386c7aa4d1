"""A store's background task (flushers, the worker thread's hops) around a block of code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio


@asynccontextmanager
async def running(run: Callable[..., Awaitable[Any]]) -> AsyncIterator[None]:
    """Start ``run`` (a ``task_status`` function), run the block, then stop it.

    The block's own exception comes out as itself, not wrapped in the nursery's
    ``ExceptionGroup``: callers of ``open_store`` catch ``StoreError`` and friends
    as usual.
    """
    single: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            yield
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        raise single
