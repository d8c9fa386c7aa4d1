"""The erasure watch: what ``concierge forget`` erased in the store, this process forgets too.

``forget`` runs in its own process (and, with replicas, another daemon may host the
user's conversation), so each daemon polls the store's erasure notices: a keyed hash
per forgotten identity. For each, it stops the user's live conversation actor (its
memory holds recent texts, language, service type) and erases the user's session
cache entries (context window, rate-limit buckets), which a memory cache keeps in
this process only.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
import trio

from concierge.domain import user_of_entry
from concierge.store import CacheUnavailable, Erasure, SessionCache, erasure_digest

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
    ends it. A notice is done once the cache has been erased; a cache that is down
    keeps it for the next poll.
    """
    key = await store.erasure_key()
    after = 0
    task_status.started()
    while True:
        notices = await store.erasures_after(after)
        if notices:
            digests = {n.user_digest for n in notices}

            def forgotten(user_key: str, digests: set[str] = digests) -> bool:
                return erasure_digest(key, user_key) in digests

            stopped = [scope for user_key, scope in live.items() if forgotten(user_key)]
            for scope in stopped:
                scope.cancel()
            try:
                entries = await cache.forget(lambda name: forgotten(user_of_entry(name)))
            except CacheUnavailable:
                log.warning("erasure.cache_unavailable", retry_in_s=interval_s)
            else:
                after = notices[-1].erasure_id
                log.info(
                    "erasure.applied",
                    notices=len(notices),
                    actors_stopped=len(stopped),
                    cache_entries=entries,
                )
        await trio.sleep(interval_s)
