"""What one user's first turn costs the durable store, under a burst of new users.

A new user costs the store three calls: ``accept`` (the inbox row, from the
webhook), ``open_conversation`` (user, conversation, handoff, backlog, history,
when their actor starts) and ``complete_turn`` (the turn's rows and the inbox
mark, after the provider answered). This runs each phase for ``--users`` users
at once, as the daemon would under a burst, and prints per phase the wall time,
the time per user and the CPU time of the event-loop thread per user (the
resource the conversation actors share with the store).

Prints figures, asserts nothing.

    python bench/bench_store_turns.py                       # sqlite and postgres
    python bench/bench_store_turns.py --store sqlite --users 10000
    CONCIERGE_BENCH_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        python bench/bench_store_turns.py --store postgres
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch_store import bench_store_settings, scratch_store  # this folder: run as a script

from concierge.protocol import (
    Channel,
    ConversationStart,
    InboundMessage,
    Interaction,
    OutboundReply,
    ServiceType,
    TurnRecord,
    new_correlation_id,
    utcnow,
)
from concierge.store import Store

ADMIN_DSN = os.environ.get(
    "CONCIERGE_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
QUESTION = "A quelle heure est la messe dimanche ?"
ANSWER = "La messe dominicale est célébrée le dimanche à 10 h 30 en l'église Saint-Martin. " * 3


@asynccontextmanager
async def _store(kind: str, pool_size: int) -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_store_settings(Path(tmp), pool_size=pool_size)
        async with scratch_store(kind, settings, ADMIN_DSN) as store:
            yield store


async def _phase(
    label: str, users: int, work: Callable[[int], Awaitable[None]], *, concurrency: int
) -> None:
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            await work(i)

    cpu = time.thread_time()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(users):
            nursery.start_soon(one, i)
    wall = time.perf_counter() - start
    cpu = time.thread_time() - cpu
    print(
        f"  {label:<18} {wall:6.2f} s  {wall / users * 1e6:7.1f} µs/user wall  "
        f"{cpu / users * 1e6:7.1f} µs/user event-loop CPU"
    )


def _turn(i: int, inbox_id: int, start: ConversationStart) -> TurnRecord:
    cid = new_correlation_id()
    conversation_id = start.conversation.conversation_id
    return TurnRecord(
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        correlation_id=cid,
        service_type=ServiceType.RENSEIGNEMENT,
        inbound_text=QUESTION,
        outbound_text=ANSWER,
        replies=(
            OutboundReply(
                correlation_id=cid,
                channel=Channel.TELEGRAM,
                user_key=f"telegram:{i}",
                chat_id=str(i),
                text=ANSWER,
                inbox_id=inbox_id,
            ),
        ),
        interaction=Interaction(
            correlation_id=cid,
            conversation_id=conversation_id,
            provider="anthropic",
            model="claude",
            key_alias="k1",
            latency_s=1.0,
            tokens_in=900,
            tokens_out=80,
            outcome="ok",
            service_type=ServiceType.RENSEIGNEMENT,
            created_at=utcnow(),
        ),
        conversation_type=ServiceType.RENSEIGNEMENT,
    )


async def _run(kind: str, users: int, concurrency: int, pool_size: int) -> None:
    async with _store(kind, pool_size) as store:
        print(f"{store.backend}: {users} new users, {concurrency} at a time")
        inbox: dict[int, int] = {}
        starts: dict[int, ConversationStart] = {}

        async def accept(i: int) -> None:
            accepted = await store.accept(
                InboundMessage(
                    correlation_id=new_correlation_id(),
                    channel=Channel.TELEGRAM,
                    user_key=f"telegram:{i}",
                    chat_id=str(i),
                    external_id=f"{i}:1",
                    text=QUESTION,
                    received_at=utcnow(),
                    display_name=f"User {i}",
                )
            )
            inbox[i] = accepted.inbox_id

        async def open_(i: int) -> None:
            starts[i] = await store.open_conversation(
                Channel.TELEGRAM,
                f"telegram:{i}",
                display_name=f"User {i}",
                pending_limit=0,
                recent_limit=24,
            )

        async def complete(i: int) -> None:
            ids = await store.complete_turn(_turn(i, inbox[i], starts[i]))
            if len(ids) != 1:
                raise RuntimeError(f"user {i}: turn wrote {len(ids)} replies, expected 1")

        async def reopen(i: int) -> None:
            again = await store.open_conversation(
                Channel.TELEGRAM, f"telegram:{i}", pending_limit=8, recent_limit=24
            )
            if len(again.recent) != 2 or again.pending:
                raise RuntimeError(f"user {i}: reopened with {attrs.asdict(again)!r}")

        await _phase("accept", users, accept, concurrency=concurrency)
        await _phase("open (new user)", users, open_, concurrency=concurrency)
        await _phase("complete_turn", users, complete, concurrency=concurrency)
        await _phase("open (returning)", users, reopen, concurrency=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=int, default=10_000, help="calls in flight at once per phase"
    )
    parser.add_argument("--pool-size", type=int, default=5, help="PostgreSQL connections")
    args = parser.parse_args()
    kinds = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    for kind in kinds:
        trio.run(_run, kind, args.users, args.concurrency, args.pool_size)


if __name__ == "__main__":
    main()
