"""Inbox replay: hand unprocessed inbox rows to the router again, at start and periodically.

Rows stay unprocessed when the daemon stopped mid-turn, when ingest could not
forward them in time, or when a conversation crashed. Rows younger than
``grace_s`` are left alone (they are probably in a queue right now), except at
start, when nothing can be in flight. Conversations drop rows they have already
seen, so a replayed row is never answered twice by the same actor.

With ``Admission``, rows are replayed only as it admits them, and a drain
hands over the rows ingest left in the inbox (the daemon was saturated) as soon as
turns end: oldest first, skipping the rows in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import structlog
import trio

from concierge.domain import Admission
from concierge.protocol import RouterMsg, utcnow
from concierge.store import Inbox

log = structlog.get_logger(__name__)


class _Recent:
    """Rows replayed lately, so a slow queue is not fed the same row every pass."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._sent: OrderedDict[int, float] = OrderedDict()

    def fresh(self, inbox_id: int, now: float, within_s: float) -> bool:
        sent = self._sent.get(inbox_id)
        return sent is not None and now - sent < within_s

    def note(self, inbox_id: int, now: float) -> None:
        self._sent[inbox_id] = now
        self._sent.move_to_end(inbox_id)
        if len(self._sent) > self._capacity:
            self._sent.popitem(last=False)


async def replay_once(
    *,
    store: Inbox,
    router: trio.MemorySendChannel[RouterMsg],
    cutoff: datetime,
    recent: _Recent | None = None,
    resend_after_s: float = 0.0,
    send_timeout_s: float = 10.0,
    batch: int = 2000,
    admission: Admission | None = None,
) -> int:
    """Send unprocessed rows received before ``cutoff`` to the router, oldest first."""
    rows = await store.pending_inbox(limit=batch)
    sent = 0
    for row in rows:
        if row.received_at >= cutoff:
            continue
        now = trio.current_time()
        if recent is not None and recent.fresh(row.inbox_id, now, resend_after_s):
            continue
        if admission is not None:
            if admission.holds(row.inbox_id):
                continue
            if not admission.admit(row.inbox_id):
                admission.defer()  # the drain goes on as turns end
                break
        with trio.move_on_after(send_timeout_s) as scope:
            await router.send(row)
        if scope.cancelled_caught:
            log.warning("inbox.replay_stalled", inbox_id=row.inbox_id, sent=sent)
            if admission is not None:
                admission.release(row.inbox_id)
            break
        if recent is not None:
            recent.note(row.inbox_id, now)
        sent += 1
    if sent:
        log.info("inbox.replayed", rows=sent)
    return sent


async def drain_deferred(
    *,
    store: Inbox,
    router: trio.MemorySendChannel[RouterMsg],
    admission: Admission,
    batch: int = 2000,
    router_full_s: float = 0.05,
    gather_s: float = 0.02,
) -> None:
    """Hand the rows left in the inbox to the router whenever admission has room, until cancelled.

    Each pass reads the oldest rows, those in flight included; waiting ``gather_s`` for
    more turns to end makes one read admit several rows, not one read per ended turn.
    """
    while True:
        # Room also comes back when the outbox's backlog shrinks, which sets no event.
        with trio.move_on_after(0.5):
            await admission.wait_for_work()
        if not (admission.deferred and admission.room() > 0):
            continue
        await trio.sleep(gather_s)
        limit = min(batch, admission.room() + admission.in_flight)
        seen = admission.deferred
        rows = await store.pending_inbox(limit=limit)
        for row in rows:
            if admission.holds(row.inbox_id):
                continue
            if not admission.admit(row.inbox_id):
                break  # no room: wait for the next turn to end
            try:
                router.send_nowait(row)
            except trio.WouldBlock:
                admission.release(row.inbox_id)
                await trio.sleep(router_full_s)
                break
        else:
            if len(rows) < limit:
                admission.drained(seen)  # every row waiting then is in flight now


async def run_inbox_replay(
    *,
    store: Inbox,
    router: trio.MemorySendChannel[RouterMsg],
    grace_s: float,
    interval_s: float = 30.0,
    now: Callable[[], datetime] = utcnow,
    admission: Admission | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Replay everything left from before this start, then every ``interval_s`` what is older than ``grace_s``.

    The router channel belongs to the builder (the replayer only sends on it), so it
    is not closed here.
    """
    started_at = now()
    recent = _Recent()
    async with trio.open_nursery() as nursery:
        if admission is not None:
            nursery.start_soon(
                partial(drain_deferred, store=store, router=router, admission=admission)
            )
        task_status.started()
        await replay_once(
            store=store,
            router=router,
            cutoff=started_at,
            recent=recent,
            resend_after_s=grace_s,
            admission=admission,
        )
        while True:
            await trio.sleep(interval_s)
            cutoff = max(started_at, now() - timedelta(seconds=grace_s))
            await replay_once(
                store=store,
                router=router,
                cutoff=cutoff,
                recent=recent,
                resend_after_s=grace_s,
                admission=admission,
            )
