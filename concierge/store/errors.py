"""Store errors.

StoreError
├── StoreUnavailable     the durable store cannot be reached now (ingest answers 503)
├── SchemaOutdated       the database schema is older than the code: run `concierge migrate`
├── UnknownUser          no user has the id or identity given (`concierge forget`)
├── StaleLease           the database refused a turn's commit: its conversation lease moved on
└── CacheUnavailable     the session cache cannot be reached (callers fall back and go on)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every store failure."""


class StoreUnavailable(StoreError):
    """The durable store did not answer; nothing was committed."""


class SchemaOutdated(StoreError):
    """The schema version is older than the code needs."""

    def __init__(self, *, found: int, needed: int) -> None:
        super().__init__(
            f"database schema is at version {found}, the code needs {needed}: "
            "run `concierge migrate`"
        )
        self.found = found
        self.needed = needed


class CacheUnavailable(StoreError):
    """The session cache did not answer; the caller rebuilds from the durable store."""


class UnknownUser(StoreError, LookupError):
    """No user has the id or channel identity given (``concierge forget``)."""


class StaleLease(StoreError):
    """A turn's commit carried a lease epoch the database no longer holds: another replica
    took the conversation over, so this one must stop (nothing of the turn was written)."""
