"""One-shot operator commands: ``migrate``, ``forget``, ``handoff list|close``.

Each opens the configured durable store, does one thing, prints what it did and
exits; the running daemon picks changes up from the store (a closed handoff's
message to the user sits in the outbox until a sender delivers it). ``forget`` and
``handoff close`` are recorded in the audit trail, as done ``via`` the command line.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Awaitable, Callable

import trio

from concierge.app.errors import CommandError
from concierge.app.runtime import asyncio_bridge, log_to_stderr
from concierge.domain import (
    Operator,
    close_handoff as close_open_handoff,
    forget_user,
    load_languages,
    open_handoffs,
    record_action,
)
from concierge.settings import Settings
from concierge.store import (
    Store,
    StoreError,
    UnknownUser,
    migrate as apply_migrations,
    open_session_cache,
    open_store,
)


def _run(settings: Settings, job: Callable[[], Awaitable[int]]) -> int:
    log_to_stderr(settings)  # what the command did goes to stdout

    async def main() -> int:
        async with asyncio_bridge(settings):
            try:
                return await job()
            except UnknownUser as exc:
                raise CommandError(str(exc)) from None
            except (StoreError, OSError) as exc:
                raise CommandError(f"the durable store failed: {exc}") from None

    code: int = trio.run(main)
    return code


def migrate(settings: Settings) -> int:
    async def job() -> int:
        applied = await apply_migrations(settings.store)
        if applied:
            print(f"applied migrations: {', '.join(str(v) for v in applied)}")
        else:
            print("schema up to date: nothing to apply")
        return 0

    return _run(settings, job)


def forget(settings: Settings, user: str) -> int:
    """Erase in the store and, when it is shared (Redis), the session cache; running
    daemons stop the user's conversation and clear their own cache on the store's notice."""

    async def job() -> int:
        try:
            async with (
                open_store(settings.store) as store,
                open_session_cache(settings.store) as cache,
            ):
                shared = cache.backend != "memory"  # a memory cache lives in the daemon
                forgotten = await forget_user(store, user, cache=cache if shared else None)
                await record_action(
                    store,
                    _operator(),
                    "user.erase",
                    f"user:{forgotten.user_id}",
                    detail=f"{forgotten.rows} rows",
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not shared:
            cached = "running daemons erase their in-memory cache"
        elif forgotten.cache_entries is None:
            cached = "the session cache was unreachable: running daemons erase it"
        else:
            cached = f"{forgotten.cache_entries} cache entries erased"
        print(f"forgot user {forgotten.user_id}: {forgotten.rows} rows erased, {cached}")
        return 0

    return _run(settings, job)


def list_handoffs(settings: Settings) -> int:
    async def job() -> int:
        async with open_store(settings.store) as store:
            rows = await open_handoffs(store)
        if not rows:
            print("no open handoffs")
        for row in sorted(rows, key=lambda r: not r.urgent):  # urgent ones first
            print(
                f"{row.handoff_id}\t{row.user_key}\topened {row.opened_at.isoformat()}\t{row.state.value}\t{row.reason}"
                + ("\tURGENT" if row.urgent else "")
            )
        return 0

    return _run(settings, job)


def close_handoff(settings: Settings, *, user: str, by: str) -> int:
    languages = load_languages(settings.config_dir / "languages")

    async def job() -> int:
        store: Store
        async with open_store(settings.store) as store:
            row = await close_open_handoff(store, languages=languages, by=by, user_key=user)
            if row is not None:
                await record_action(
                    store, _operator(by), "handoff.close", f"handoff:{row.handoff_id}"
                )
        if row is None:
            raise CommandError(f"no open handoff for {user!r} (see `concierge handoff list`)")
        print(
            f"closed handoff {row.handoff_id} of {row.user_key}; the user is told the concierge answers again"
        )
        return 0

    return _run(settings, job)


def _operator(name: str | None = None) -> Operator:
    """Whoever runs the command, as the audit trail names them."""
    return Operator(name=name or f"cli:{getpass.getuser()}", role="admin", via="cli")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the concierge command")
