"""The drain after SIGTERM: finish the work in hand, then stop, listener last.

Phases, each logged with its duration:

1. ``daemon.drain_started``: ``/readyz`` answers 503 from now on (a proxy's health
   check sends new traffic to another replica), while the listener keeps serving.
   Webhooks that still arrive are committed to the durable inbox before their 200,
   so accepting them loses nothing.
2. ``daemon.turns_finished``: the turn gate is closed (no turn starts in this
   process any more) and the turns in flight commit, within
   ``CONCIERGE_DRAIN_TIMEOUT_S``. Messages accepted from phase 1 on stay unprocessed
   in the inbox for the next start or another replica.
3. ``daemon.leases_released``: what this process holds for others (the ``release``
   hook) is given back, so another replica takes over at once rather than after an
   expiry.
4. ``daemon.outbox_flushed``: every outbox row due now is sent, within what is left
   of the drain timeout (rows waiting for a retry stay for the next start).
   ``daemon.outbox_closed``: the sending gate is closed (the senders claim no more
   rows, which another replica may still be writing), the deliveries in flight end,
   and the rows claimed and not sent are given back (``release_claims``). A sender
   cut in the middle of a send by the tree's stop would leave a row the platform may
   have taken, re-sent later by another replica: a duplicate.
5. ``daemon.tree_stopped``: once readiness has failed for ``CONCIERGE_DRAIN_NOTICE_S``
   (a load balancer polling ``/readyz`` has stopped sending here by then, so closing
   the listener cuts no request it routed), the supervision tree stops in reverse
   start order, each child within its own shutdown time; the HTTP listener closes
   only now, and its requests in flight get the graceful timeout.

Past the drain timeout a phase is cut short (logged as ``daemon.drain_timed_out``)
and the tree is stopped anyway: a turn cut there is replayed from the inbox later,
so nothing is lost, the person only waits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio

from actors import TurnGate
from concierge.protocol import Channel, utcnow
from concierge.store import Outbox, StoreError

log = structlog.get_logger(__name__)

FLUSH_POLL_S = 0.1
"""How often the outbox flush looks again for rows due (a cheap indexed read)."""

Release = Callable[[], Awaitable[None]]


async def release_nothing() -> None:
    """The release hook of a process that holds nothing for other replicas."""


async def drain(
    *,
    timeout_s: float,
    notice_s: float = 0.0,
    set_draining: Callable[[], None],
    gate: TurnGate,
    release: Release,
    outbox: Outbox,
    channels: Sequence[Channel],
    stop_tree: Callable[[], Awaitable[None]],
    sending: TurnGate | None = None,
    release_claims: Release = release_nothing,
) -> bool:
    """Run the phases above; True when nothing was cut short by the timeout."""
    started = trio.current_time()
    deadline = started + timeout_s
    set_draining()
    in_flight = gate.in_flight
    gate.close()
    log.info("daemon.drain_started", turns_in_flight=in_flight, drain_timeout_s=timeout_s)
    complete = True

    phase = trio.current_time()
    with trio.move_on_at(deadline):
        await gate.wait_idle()
    if gate.in_flight:
        complete = False
        log.warning("daemon.drain_timed_out", phase="turns", turns_left=gate.in_flight)
    else:
        log.info("daemon.turns_finished", turns=in_flight, elapsed_ms=_ms_since(phase))

    phase = trio.current_time()
    released = False
    with trio.move_on_at(deadline) as release_scope:
        try:
            await release()
            released = True
        except Exception:  # what is not given back expires: the drain goes on
            log.warning("daemon.release_failed", exc_info=True)
    if release_scope.cancelled_caught:
        log.warning("daemon.drain_timed_out", phase="release")
    if released:
        log.info("daemon.leases_released", elapsed_ms=_ms_since(phase))
    else:
        complete = False

    phase = trio.current_time()
    left: int | None = None
    with trio.move_on_at(deadline):
        left = await _flush(outbox, channels)
    if left is None:
        complete = False
        log.warning("daemon.drain_timed_out", phase="outbox")
    elif left:
        complete = False
        log.warning("daemon.outbox_unflushed", reason="store unavailable")
    else:
        log.info("daemon.outbox_flushed", elapsed_ms=_ms_since(phase))

    if sending is not None and not await _close_outbox(sending, release_claims, deadline):
        complete = False

    await trio.sleep_until(started + notice_s)
    phase = trio.current_time()
    await stop_tree()
    log.info("daemon.tree_stopped", elapsed_ms=_ms_since(phase))
    log.info("daemon.drained", complete=complete, elapsed_ms=_ms_since(started))
    return complete


async def _flush(outbox: Outbox, channels: Sequence[Channel]) -> int:
    """Wait until no row is due on ``channels`` (0); 1 when the store cannot say.

    The senders keep running meanwhile: this only watches them catch up.
    """
    waiting = list(channels)
    while waiting:
        try:
            due = [await outbox.pending_outbox(c, now=utcnow(), limit=1) for c in waiting]
        except StoreError:
            return 1
        waiting = [c for c, rows in zip(waiting, due, strict=True) if rows]
        if waiting:
            await trio.sleep(FLUSH_POLL_S)
    return 0


async def _close_outbox(sending: TurnGate, release_claims: Release, deadline: float) -> bool:
    """Stop the senders claiming, wait for their deliveries, give back what they claimed."""
    phase = trio.current_time()
    in_flight = sending.in_flight
    sending.close()
    with trio.move_on_at(deadline):
        await sending.wait_idle()
    if sending.in_flight:
        # A row in flight keeps its claim: it expires, then another replica sends it.
        log.warning("daemon.drain_timed_out", phase="outbox_close", sends_left=sending.in_flight)
        return False
    with trio.move_on_at(deadline) as scope:
        try:
            await release_claims()
        except Exception:  # claims not given back expire: the drain goes on
            log.warning("daemon.release_failed", what="outbox_claims", exc_info=True)
            return False
    if scope.cancelled_caught:
        log.warning("daemon.drain_timed_out", phase="outbox_claims")
        return False
    log.info("daemon.outbox_closed", sends_waited=in_flight, elapsed_ms=_ms_since(phase))
    return True


def _ms_since(start: float) -> int:
    return round((trio.current_time() - start) * 1000)
