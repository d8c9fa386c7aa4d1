"""The inbox listener: what other replicas accepted reaches the person's lease holder at once.

Every inbox row inserted notifies ``concierge_inbox`` with its user key (a trigger);
``wake`` hands that to the person's actor if it runs here. A lease let go with rows
still pending notifies ``concierge_released``: the listener routes the person's
oldest pending row, so some replica (the first to take the lease) answers them now,
not at the next replay. A link, an unlink or an erasure committed anywhere notifies
``concierge_people`` with the persons' user ids: the listener re-keys their identities
here (``LivePersons.refresh``), so every replica routes a person's identities to one
key, hence one lease and one actor. Each time it starts listening it takes every
person again from the store (what changed while it was not listening). A lost session is opened again (every ``retry_s``, as long as
the database is away, without troubling the supervisor); what was missed meanwhile
the inbox replay finds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog
import trio

from concierge.protocol import RouterMsg
from concierge.store import Inbox, Sessions, StoreError

log = structlog.get_logger(__name__)

INBOX_CHANNEL = "concierge_inbox"
RELEASED_CHANNEL = "concierge_released"
PEOPLE_CHANNEL = "concierge_people"
PING_S = 5.0
SEND_TIMEOUT_S = 1.0


class PeopleSync(Protocol):
    """Who is who here, kept in step with the store."""

    async def refresh(self, user_ids: list[int]) -> None: ...

    async def resync(self) -> None: ...


async def run_inbox_listener(
    *,
    sessions: Sessions,
    store: Inbox,
    router: trio.MemorySendChannel[RouterMsg],
    wake: Callable[[str], object],
    people: PeopleSync | None = None,
    retry_s: float = 2.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forward inbox notices to the person's actor or the router, reconnecting as needed.

    The router channel belongs to the builder (the listener only sends on it).
    """
    task_status.started()
    lost = False
    while True:
        try:
            async with (
                sessions.open_session("listen") as session,
                session.notices(INBOX_CHANNEL) as added,
                session.notices(RELEASED_CHANNEL) as released,
                session.notices(PEOPLE_CHANNEL) as persons,
            ):
                log.info("inbox.listening", session_pid=session.backend_pid, again=lost)
                async with trio.open_nursery() as nursery:
                    if people is not None:
                        await people.resync()
                        nursery.start_soon(_rekey, persons, people)
                    nursery.start_soon(_wake_holders, added, wake)
                    nursery.start_soon(_take_over, released, store, router)
                    while True:
                        await trio.sleep(PING_S)
                        await session.ping()
        except* StoreError as group:
            if not lost:
                log.warning("inbox.listener_lost", error=str(group.exceptions[0]))
            lost = True
        await trio.sleep(retry_s)


async def _wake_holders(
    added: trio.MemoryReceiveChannel[str], wake: Callable[[str], object]
) -> None:
    async for user_key in added:
        wake(user_key)


async def _take_over(
    released: trio.MemoryReceiveChannel[str],
    store: Inbox,
    router: trio.MemorySendChannel[RouterMsg],
) -> None:
    async for user_key in released:
        try:
            rows = await store.pending_inbox(user_key=user_key, limit=1)
        except StoreError as exc:
            log.warning("inbox.takeover_failed", error=str(exc))
            continue
        if rows:
            with trio.move_on_after(SEND_TIMEOUT_S):
                await router.send(rows[0])


async def _rekey(persons: trio.MemoryReceiveChannel[str], people: PeopleSync) -> None:
    async for payload in persons:
        try:
            user_ids = [int(u) for u in payload.split()]
        except ValueError:
            log.warning("inbox.people_notice_unreadable")
            continue
        # A store error ends the session: opened again, it takes every person anew.
        await people.refresh(user_ids)
