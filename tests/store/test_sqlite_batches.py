"""The embedded store's batches: a batch of accepts runs as a few set-based statements and
answers each caller as if its call had run alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from concierge.protocol import Channel, utcnow
from concierge.store.base import (
    Accepted,
    AcceptStatus,
    NewInbound,
)
from concierge.store.open import open_store
from concierge.store.sqlite import (
    SqliteStore,
)
from tests.store.conftest import store_settings
from tests.store.test_sqlite_store import Blocker

pytestmark = pytest.mark.anyio

Call = Callable[[], Awaitable[Any]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(store_settings(data_dir=tmp_path)) as opened:
        assert isinstance(opened, SqliteStore)
        yield opened


async def one_batch(
    store: SqliteStore, leaders: tuple[Call, Call], calls: Sequence[Call]
) -> list[Any]:
    """The outcomes (result or exception) of ``calls``, made to share one batch in the given order.

    The worker thread is held while everything queues: the first leader goes to its
    committer directly and the second is the flusher's first batch, so both wait in
    the worker's queue; the calls wait in the committer's, in order, until the flusher
    takes them all at once.
    """
    outcomes: dict[int, Any] = {}

    async def keep(i: int, call: Call) -> None:
        try:
            outcomes[i] = await call()
        except Exception as exc:
            outcomes[i] = exc

    blocker = Blocker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run, blocker)
        await blocker.wait_entered()
        for i, call in enumerate([*leaders, *calls]):
            nursery.start_soon(keep, i, call)
            await trio.testing.wait_all_tasks_blocked()
        blocker.release.set()
    return [outcomes[i] for i in range(2, len(calls) + 2)]


def message(external_id: str, *, user: str = "telegram:1", text: str = "Bonjour") -> NewInbound:
    return NewInbound(
        correlation_id=f"cid-{external_id}-{text}",
        channel=Channel.TELEGRAM,
        user_key=user,
        chat_id=user.partition(":")[2],
        external_id=external_id,
        text=text,
        received_at=utcnow(),
        display_name="Marie",
    )


def accept(store: SqliteStore, m: NewInbound) -> Call:
    return lambda: store.accept(m)


# -- accept ---------------------------------------------------------------------------
async def test_a_batch_of_accepts_answers_a_repeat_with_the_first_row_and_keeps_arrival_order(
    store: SqliteStore,
) -> None:
    stored = await store.accept(message("stored"))
    first, again, old, other = await one_batch(
        store,
        (accept(store, message("lead-1")), accept(store, message("lead-2"))),
        [
            accept(store, message("new", text="first")),
            accept(store, message("new", text="second")),
            accept(store, message("stored")),
            accept(store, message("other")),
        ],
    )
    assert store.committer.statistics().largest_batch == 4
    assert first.status is AcceptStatus.NEW
    assert again == Accepted(status=AcceptStatus.DUPLICATE, inbox_id=first.inbox_id)
    assert old == Accepted(status=AcceptStatus.DUPLICATE, inbox_id=stored.inbox_id)
    assert other.status is AcceptStatus.NEW
    assert other.inbox_id > first.inbox_id
    pending = await store.pending_inbox()
    assert [(r.external_id, r.text) for r in pending] == [
        ("stored", "Bonjour"),
        ("lead-1", "Bonjour"),
        ("lead-2", "Bonjour"),
        ("new", "first"),
        ("other", "Bonjour"),
    ]
    assert pending[3] == (await store.pending_inbox(user_key="telegram:1"))[3]


async def test_a_nul_character_reaches_the_file_intact_batched_or_not(store: SqliteStore) -> None:
    text = "avant\x00après"
    lone = await store.accept(message("lone", text=text))
    batched = await one_batch(
        store,
        (accept(store, message("lead-1")), accept(store, message("lead-2"))),
        [accept(store, message("nul", text=text)), accept(store, message("plain"))],
    )
    assert [a.status for a in [lone, *batched]] == [AcceptStatus.NEW] * 3
    nul = batched[0].inbox_id
    assert [r.text for r in await store.pending_inbox() if r.inbox_id in (lone.inbox_id, nul)] == [
        text,
        text,
    ]
