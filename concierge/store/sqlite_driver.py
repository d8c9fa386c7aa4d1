"""What the SQLite store's modules must agree on about ``sqlite3`` and SQLite.

SQLite has no instant type: an instant is stored as fixed-width UTC text, which sorts
like the instant it encodes, and rows are read back through ``rows`` with that
encoding. A write is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock at
``BEGIN``, where the busy timeout waits for it, not at its first write, where SQLite
fails a transaction that has already read with ``SQLITE_BUSY`` if another connection
wrote first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from concierge.store import rows

T = TypeVar("T")


def ts(value: datetime) -> str:
    """A fixed-width UTC text instant that sorts like the instant it encodes."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: store instants must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


inbox_row = partial(rows.inbox_row, instant=dt)
outbox_row = partial(rows.outbox_row, instant=dt)
handoff_row = partial(rows.handoff_row, instant=dt)
conversation_row = partial(rows.conversation_row, instant=dt)
interaction_values = partial(rows.interaction_values, stored=ts)
handoff_view = partial(rows.handoff_view, instant=dt)
history_entry = partial(rows.history_entry, instant=dt)
user_view = partial(rows.user_view, instant=dt)
audit_values = partial(rows.audit_values, stored=ts)
audit_row = partial(rows.audit_row, instant=dt)


def tx(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
