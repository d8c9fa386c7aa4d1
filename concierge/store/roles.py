"""The durable store and session cache interfaces: the only way actors reach data.

``Store`` holds what the concierge must not lose (SQLite embedded, PostgreSQL in
production); ``SessionCache`` holds what it can rebuild (memory embedded, Redis in
production).

``Store`` is cut into the roles its callers have, one protocol each, so that a
caller is typed by what it does and a reader sees at once which records an actor
can touch: ``Inbox`` (messages in: ingest and the replayer), ``Turns`` (an inbox
row settled, with what its turn wrote: conversations and the router),
``Conversations`` (a conversation's opening read and its history), ``Handoffs``,
``Outbox`` (replies written and delivered), ``Identities`` (users and their channel
identities), ``Cursors`` (a poller's place in a platform's stream), ``Erasure``
(retention and ``concierge forget``), ``Usage`` (tokens per day, for the budgets),
``Persons`` (one person's identities across channels: link codes, merging, taking a
channel out), ``OperatorQueries`` (what staff read and do through the operator API and
the staff chat), ``Audit`` (the operator actions' trail) and ``Health``. A caller that needs several
names the union it needs where it lives (``ConversationStore`` in the conversation
actor, ``HandoffDesk`` in the handoff logic). ``Store`` is the union of every role;
the backends implement it and only the composition root holds one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import Protocol

import trio

from concierge.protocol import (
    Accepted,
    AuditEntry,
    AuditRow,
    Channel,
    ConversationRow,
    ConversationStart,
    DailyUsage,
    Erased,
    ErasureNotice,
    HandoffRow,
    HandoffView,
    HistoryEntry,
    Inbound,
    InboundMessage,
    LinkCode,
    Linked,
    OutboundReply,
    OutboxRow,
    PersonIdentity,
    StaffReply,
    Turn,
    TurnRecord,
    Unlinked,
    UserRow,
    UserView,
)


class Health(Protocol):
    """What the store monitor asks: which backend, and how fast it answers."""

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgres`` (for health checks and logs)."""
        ...

    async def ping(self) -> float:
        """Round-trip one trivial query; return its latency in seconds."""
        ...


class Inbox(Protocol):
    """The durability boundary: platform messages committed, and read back while pending."""

    async def accept(self, message: InboundMessage) -> Accepted:
        """Commit an inbox row unless (channel, external_id) exists; batched when concurrent.

        A message its user had erased (a tombstone matches) is ``ERASED`` and not stored.
        """
        ...

    async def pending_inbox(
        self, *, user_key: str | None = None, limit: int = 1000
    ) -> Sequence[Inbound]:
        """Unprocessed rows in arrival order (per user when ``user_key`` is given)."""
        ...


class Turns(Protocol):
    """An inbox row settled: marked processed, with everything its turn wrote, at once."""

    async def complete_turn(self, turn: TurnRecord) -> tuple[int, ...]:
        """Write a handled row's messages, replies and interaction and mark it processed, atomically.

        A row already processed is left alone and ``()`` returned: a row replayed after
        a crash that followed its commit is never answered twice. Otherwise returns the
        new outbox ids in the order of ``turn.replies``.
        """
        ...

    async def mark_processed(self, inbox_id: int) -> None:
        """Settle a row nobody answers (the user was already told to send it again)."""
        ...


class Conversations(Protocol):
    """A user's conversation: what a new actor reads at once, and the recorded history."""

    async def open_conversation(
        self,
        channel: Channel,
        user_key: str,
        *,
        display_name: str | None = None,
        pending_limit: int,
        recent_limit: int,
    ) -> ConversationStart:
        """The user (created on first contact), conversation, open handoff, pending rows and
        ``recent_turns``, in one round trip: a new actor's reads, at once, under a burst.
        """
        ...

    async def conversation_for(self, user_id: int) -> ConversationRow:
        """The user's conversation, created on first use."""
        ...

    async def recent_turns(self, conversation_id: int, *, limit: int) -> Sequence[Turn]:
        """The last ``limit`` messages, oldest first: rebuilds a lost session cache."""
        ...


class Handoffs(Protocol):
    """A person taking a conversation over: opened by its actor, closed by staff or timeout."""

    async def open_handoff(
        self,
        *,
        conversation_id: int,
        user_key: str,
        reason: str,
        correlation_id: str,
        urgent: bool = False,
    ) -> HandoffRow:
        """Open a handoff (or return the one already open for this conversation).

        ``urgent`` marks it urgent, an open one too: that one then takes
        ``correlation_id``, the message that made it urgent.
        """
        ...

    async def active_handoff(self, conversation_id: int) -> HandoffRow | None: ...

    async def close_handoff(self, handoff_id: int, *, closed_by: str) -> bool:
        """Close an active handoff; ``False`` when it was not active (closed before)."""
        ...

    async def handoffs_opened_before(self, cutoff: datetime) -> Sequence[HandoffRow]:
        """Open handoffs older than ``cutoff`` (for the timeout sweep and ``handoff list``)."""
        ...


class Outbox(Protocol):
    """Replies written before anything is sent, then delivered by each channel's sender."""

    async def enqueue_reply(self, reply: OutboundReply) -> int:
        """Write a reply to send; return its outbox id."""
        ...

    async def pending_outbox(
        self, channel: Channel, *, now: datetime | None = None, limit: int = 100
    ) -> Sequence[OutboxRow]:
        """Unsent rows due by ``now`` in creation order.

        A row waits while an earlier unsent row of the same user waits for its retry,
        so one user's replies never overtake each other.
        """
        ...

    async def mark_sent(self, outbox_id: int, *, message_ids: Sequence[str] = ()) -> None:
        """Record the row delivered; ``message_ids`` are the platform's ids of what was sent.

        For a row about a handoff (``OutboundReply.handoff_id``), the ids are kept so that
        a staff member's reply to one of those messages finds its handoff.
        """
        ...

    async def mark_send_failed(
        self, outbox_id: int, *, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed attempt; ``retry_at=None`` gives the row up (never retried)."""
        ...

    async def mark_unreachable(self, user_key: str) -> None:
        """The platform says this user blocked us: stop sending to them.

        Their unsent replies are given up; ``resolve_user`` (they wrote again) clears the flag.
        """
        ...


class Identities(Protocol):
    """Users and the channel identities that reach them."""

    async def resolve_user(
        self, channel: Channel, user_key: str, *, display_name: str | None = None
    ) -> int:
        """The user id for a channel identity, creating the user on first contact."""
        ...

    async def link_identity(self, user_id: int, channel: Channel, user_key: str) -> None:
        """Attach another channel identity to an existing user."""
        ...

    async def user_for_key(self, user_key: str) -> UserRow | None: ...


class Persons(Protocol):
    """One person across channels: link codes, merging two persons, taking a channel out."""

    async def issue_link_code(
        self, *, channel: Channel, user_key: str, chat_id: str, digest: str, expires_at: datetime
    ) -> None:
        """Keep a code's keyed hash for ``user_key`` (replacing the one it had)."""
        ...

    async def live_link_codes(self, now: datetime) -> Sequence[LinkCode]:
        """Every code not yet expired at ``now`` (few: each lives minutes)."""
        ...

    async def claim_link_code(self, code_id: int, *, now: datetime) -> LinkCode | None:
        """Use the code: it is deleted (single use); ``None`` when used or expired meanwhile."""
        ...

    async def merge_persons(self, one: int, other: int) -> Linked:
        """Make two persons one (staff): the older keeps its id and takes the other's
        identities, history in time order, handoff and token counts."""
        ...

    async def unlink_identity(self, user_key: str) -> Unlinked | None:
        """Give ``user_key``'s channel a person of its own; ``None`` when it has nothing to
        leave (unknown, or no identity on another channel)."""
        ...

    async def link_failures_since(self, user_key: str, since: datetime) -> int: ...

    async def record_link_failure(self, user_key: str, at: datetime) -> None: ...

    async def person_identities(self, user_id: int) -> Sequence[PersonIdentity]: ...

    async def linked_identities(self) -> Sequence[PersonIdentity]:
        """Every identity of each person with identities on more than one channel."""
        ...


class Cursors(Protocol):
    """Where a poller stands in a platform's stream of updates, kept across restarts."""

    async def get_cursor(self, name: str) -> str | None: ...

    async def set_cursor(self, name: str, value: str) -> None: ...


class Erasure(Protocol):
    """Data protection: texts past retention, and a user who asked to be forgotten."""

    async def erase_texts_before(self, cutoff: datetime) -> int:
        """Blank message, inbox and sent outbox texts older than ``cutoff``; keep metadata."""
        ...

    async def forget_user(self, user_id: int) -> Erased:
        """Erase a user's messages and identities, leaving a tombstone per erased inbox row
        and an erasure notice per identity, in one transaction.

        Outbox rows about their messages go too, staff notices included (they quote them).
        """
        ...

    async def erasure_key(self) -> bytes:
        """The key of the store's keyed hashes, generated on first use and kept in the store."""
        ...

    async def erasures_after(
        self, erasure_id: int, *, limit: int = 1000
    ) -> Sequence[ErasureNotice]:
        """Erasure notices newer than ``erasure_id``, oldest first."""
        ...


class Usage(Protocol):
    """Tokens the providers reported, per UTC day: what the daily budgets count.

    Every interaction ``complete_turn`` writes adds its tokens to its person's and its
    provider's day, in the same transaction.
    """

    async def usage_on(self, day: date) -> DailyUsage:
        """The tokens every person (by user id) and every provider used on ``day`` (UTC)."""
        ...


class OperatorQueries(Protocol):
    """What staff read and do, through the operator API and the staff chat."""

    async def list_handoffs(
        self, *, active: bool, limit: int, before: int | None = None
    ) -> Sequence[HandoffView]:
        """Active handoffs (urgent first, then oldest first), or closed ones (newest first).

        ``before`` pages closed handoffs: only ids below it.
        """
        ...

    async def handoff_view(self, handoff_id: int) -> HandoffView | None: ...

    async def claim_handoff(self, handoff_id: int, *, by: str, take_over: bool) -> None:
        """Assign an open handoff to ``by`` (one claimed by someone else only with ``take_over``)."""
        ...

    async def record_staff_reply(self, reply: StaffReply) -> int | None:
        """Write a staff reply at once: the conversation's message, the outbox row, the claim
        (an unclaimed handoff goes to its author) and the staff message's inbox mark.

        Returns the outbox id, or ``None`` when nothing was written: the handoff is not
        active, or the inbox row was processed before (a replay).
        """
        ...

    async def history(
        self, conversation_id: int, *, limit: int, before: int | None = None
    ) -> Sequence[HistoryEntry]:
        """The ``limit`` messages before message id ``before`` (the newest without), oldest first."""
        ...

    async def user_view(self, user_id: int) -> UserView | None: ...

    async def handoff_for_staff_message(
        self, channel: Channel, chat_id: str, message_id: str
    ) -> int | None:
        """The handoff a message shown in the staff chat is about (see ``Outbox.mark_sent``)."""
        ...


class Audit(Protocol):
    """Who did what to whom through the operator API, the staff chat or the command line."""

    async def record_audit(self, entry: AuditEntry) -> int: ...

    async def audit_entries(self, *, limit: int, before: int | None = None) -> Sequence[AuditRow]:
        """Newest first; ``before`` pages back (only ids below it)."""
        ...


class Leases(Protocol):
    """Conversation leases (PostgreSQL replicas): one replica runs a person's turns at a time.

    The epoch a lease was taken at goes with every turn committed under it
    (``TurnRecord.lease_epoch``); the database refuses the commit once it moved on.
    """

    async def acquire_lease(self, key: str, *, user_key: str, ttl_s: float) -> int | None:
        """The new fencing epoch, or ``None`` while another replica holds ``key`` unexpired."""
        ...

    async def renew_lease(self, key: str, epoch: int, *, ttl_s: float) -> bool:
        """Extend a lease still held at ``epoch``; ``False`` once it was lost."""
        ...

    async def release_lease(self, key: str, epoch: int) -> None:
        """Let it go now; with rows pending, every replica is told (``concierge_released``)."""
        ...

    async def release_leases(self) -> int:
        """Let every lease of this replica go now; return how many it held."""
        ...

    async def other_leases(self, key: str, user_keys: Sequence[str]) -> int:
        """Live leases of conversations of ``user_keys`` under keys other than ``key``."""
        ...

    async def release_outbox_claims(self) -> int:
        """Give back this replica's claims on unsent outbox rows (its senders stopped):
        another replica sends them at once. Return how many."""
        ...


class Session(Protocol):
    """A database connection of its own: session advisory locks and ``LISTEN`` die with it."""

    @property
    def backend_pid(self) -> int: ...

    async def ping(self) -> None: ...

    async def try_lock(self, lock: int) -> bool: ...

    async def holds(self, lock: int) -> bool:
        """Whether the lock is still held; raises ``StoreError`` when the session is lost."""
        ...

    def notices(
        self, channel: str, *, capacity: int = 1024
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[str]]: ...


class Sessions(Protocol):
    """Opens dedicated sessions (PostgreSQL only)."""

    def open_session(self, name: str) -> AbstractAsyncContextManager[Session]: ...


class Store(
    Health,
    Inbox,
    Turns,
    Conversations,
    Handoffs,
    Outbox,
    Identities,
    Persons,
    Cursors,
    Erasure,
    Usage,
    OperatorQueries,
    Audit,
    Protocol,
):
    """Durable records, every role at once. Every method commits before it returns."""

    async def aclose(self) -> None: ...


class SessionCache(Protocol):
    """What can be rebuilt: context windows, rate-limit buckets, a dedupe fast path.

    Every key carries a TTL. A cache that is down raises ``CacheUnavailable``;
    callers fall back to the durable store and carry on.
    """

    @property
    def backend(self) -> str:
        """``memory`` or ``redis``."""
        ...

    async def ping(self) -> float: ...

    async def get_context(self, user_key: str) -> Sequence[Turn] | None:
        """The cached context window (maybe empty), or ``None`` when it must be rebuilt."""
        ...

    async def set_context(self, user_key: str, turns: Sequence[Turn], *, ttl_s: float) -> None: ...

    async def append_context(
        self, user_key: str, turns: Sequence[Turn], *, max_turns: int, ttl_s: float
    ) -> None:
        """Append turns and trim to the newest ``max_turns``.

        Only a cached window grows: when there is none (expired, evicted, Redis
        restarted) it stays missing, so the next read rebuilds it whole.
        """
        ...

    async def clear_context(self, user_key: str) -> None: ...

    async def take_token(self, bucket: str, *, rate_per_s: float, burst: int, now: float) -> bool:
        """Token bucket: take one token if available. ``now`` is a monotonic second count."""
        ...

    async def seen(self, key: str, *, ttl_s: float) -> bool:
        """Mark ``key`` seen; return whether it already was (dedupe fast path)."""
        ...

    async def forget(self, matches: Callable[[str], bool]) -> int:
        """Delete every entry (context, bucket, seen mark) whose name ``matches``; return how many.

        Rare (an erasure), so it may walk the whole cache.
        """
        ...

    async def aclose(self) -> None: ...


class SharedStore(Store, Leases, Sessions, Protocol):
    """A store several replicas share (PostgreSQL): leases and sessions of its own too."""
