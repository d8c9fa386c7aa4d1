"""What the PostgreSQL store's modules must agree on about asyncpg and PostgreSQL.

Which driver failures mean the server is out of reach or the connection was lost
(the caller retries or fails the whole call) rather than one statement refused (the
caller fails that item alone), and the one text PostgreSQL cannot store.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from concierge.store.errors import StaleLease, StoreError, StoreUnavailable

Conn = Any  # asyncpg.Connection (untyped)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, statement timeout, ...
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


DRIVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a platform message that has one keeps the rest."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def connection_lost(exc: BaseException) -> bool:
    """The connection died under us (not: the server refuses connections)."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)
    return isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.AdminShutdownError,
            # The server's FATAL notice racing our next query on that connection:
            # "cannot switch to state 11; another operation (2) is in progress".
            asyncpg.exceptions.InternalClientError,
            ConnectionResetError,
            BrokenPipeError,
        ),
    )


STALE_LEASE_SQLSTATE = "CN001"
"""What the fencing trigger raises on a commit under a lease epoch that moved on."""


def as_store_error(exc: BaseException) -> StoreError:
    if getattr(exc, "sqlstate", None) == STALE_LEASE_SQLSTATE:
        return StaleLease(f"postgres: {exc}")
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return StoreUnavailable(f"postgres: {exc}")
    return StoreError(f"postgres: {type(exc).__name__}: {exc}")
