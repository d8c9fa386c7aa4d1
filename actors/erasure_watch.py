"""The erasure watch: what ``concierge forget`` erased in the store, this process forgets too.

``forget`` runs in its own process (and, with replicas, another daemon may host the
user's conversation), so each daemon polls the store's erasure notices: a keyed hash
per forgotten identity. For each, it stops the user's live conversation actor (its
memory holds recent texts, language, service type) and erases the user's session
cache entries (context window, rate-limit buckets), which a memory cache keeps in
this process only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog
import trio

from concierge.domain import user_of_entry
from concierge.protocol import ErasureNotice
from concierge.store import (
    CacheUnavailable,
    Erasure,
    SessionCache,
    StoreUnavailable,
    erasure_digest,
)

log = structlog.get_logger(__name__)


async def run_erasure_watch(
    *,
    store: Erasure,
    cache: SessionCache,
    live: Mapping[str, trio.CancelScope],
    interval_s: float = 2.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply every erasure notice, from the first, then poll every ``interval_s``.

    ``live`` maps the user key of each running conversation actor to the scope that
    ends it. A notice is done once the cache has been erased; a store or cache that
    is down keeps it for a later poll (the store monitor reports the outage: this
    watch only says it skipped, once).
    """
    key: bytes | None = None
    after = 0
    skipping = False
    task_status.started()
    while True:
        try:
            if key is None:
                key = await store.erasure_key()
            notices = await store.erasures_after(after)
        except StoreUnavailable as exc:
            if not skipping:
                log.warning("erasure.poll_skipped", error=str(exc))
            skipping = True
        else:
            skipping = False
            if notices and await _apply(notices, key=key, cache=cache, live=live):
                after = notices[-1].erasure_id
        await trio.sleep(interval_s)


async def _apply(
    notices: Sequence[ErasureNotice],
    *,
    key: bytes,
    cache: SessionCache,
    live: Mapping[str, trio.CancelScope],
) -> bool:
    """Stop the forgotten users' actors and erase their cache entries; ``False`` if the
    cache was down (the notices are applied again at the next poll)."""
    digests = {n.user_digest for n in notices}

    def forgotten(user_key: str) -> bool:
        return erasure_digest(key, user_key) in digests

    stopped = [scope for user_key, scope in live.items() if forgotten(user_key)]
    for scope in stopped:
        scope.cancel()
    try:
        entries = await cache.forget(lambda name: forgotten(user_of_entry(name)))
    except CacheUnavailable:
        log.warning("erasure.cache_unavailable")
        return False
    log.info(
        "erasure.applied", notices=len(notices), actors_stopped=len(stopped), cache_entries=entries
    )
    return True
