"""Telegram's long-running pieces: the getUpdates poller, the webhook registration, "typing...".

The poller commits every update of a batch to the durable inbox before it moves the
offset, and persists the offset as the ``telegram.offset`` cursor, so a restart
neither loses an update nor (beyond a crash inside one batch, which the inbox
dedupes) fetches one again. It never drops pending updates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import attrs
import structlog
import trio
from prometheus_client.core import CounterMetricFamily, Metric

from actors.backoff import backoff_s
from actors.presence import PresenceBoard, run_presence
from concierge.channels import (
    ALLOWED_UPDATES,
    Ignored,
    MalformedUpdate,
    TelegramApiError,
    TelegramClient,
    TelegramError,
    parse_update,
)
from concierge.domain import Ingest
from concierge.observability import Check, Status
from concierge.settings import TelegramSettings
from concierge.store import Cursors, StoreUnavailable

log = structlog.get_logger(__name__)

OFFSET_CURSOR = "telegram.offset"

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class PollBackoff:
    """Delays after a failed poll: doubling from ``initial_s`` to ``max_s``, with jitter."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        return backoff_s(failures, initial_s=self.initial_s, max_s=self.max_s)


class TelegramPollerStats:
    """What the poller did; an ``Observable`` for ``/health`` and ``/metrics``."""

    def __init__(self) -> None:
        self.updates = 0
        self.accepted = 0
        self.duplicates = 0
        self.ignored: dict[str, int] = {}
        self.malformed = 0
        self.conflicts = 0
        self.errors = 0
        self.store_errors = 0
        self.offset: int | None = None
        self.failing = False

    def health_checks(self) -> list[Check]:
        return [
            Check(
                component="telegram",
                measurement="poller",
                status=Status.WARN if self.failing else Status.PASS,
                observed_value=self.offset,
                details={
                    "conflicts": self.conflicts,
                    "errors": self.errors,
                    "updates": self.updates,
                },
            )
        ]

    def metrics(self) -> list[Metric]:
        family = CounterMetricFamily(
            "concierge_telegram_poll_updates",
            "Updates fetched by getUpdates, by outcome",
            labels=["outcome"],
        )
        family.add_metric(["accepted"], self.accepted)
        family.add_metric(["duplicate"], self.duplicates)
        family.add_metric(["ignored"], sum(self.ignored.values()))
        family.add_metric(["malformed"], self.malformed)
        errors = CounterMetricFamily(
            "concierge_telegram_poll_errors", "Failed getUpdates calls, by kind", labels=["kind"]
        )
        errors.add_metric(["conflict"], self.conflicts)
        errors.add_metric(["other"], self.errors)
        errors.add_metric(["store"], self.store_errors)
        return [family, errors]


async def _until_stored(
    what: str, op: Callable[[], Awaitable[T]], backoff: PollBackoff, stats: TelegramPollerStats
) -> T:
    """Retry a store call through outages: the offset must not move past an uncommitted update."""
    failures = 0
    while True:
        try:
            return await op()
        except StoreUnavailable as exc:
            failures += 1
            stats.store_errors += 1
            delay = backoff.delay_s(failures)
            log.warning(
                "telegram.poll_store_unavailable",
                step=what,
                retry_in_s=round(delay, 2),
                reason=str(exc),
            )
            await trio.sleep(delay)


async def run_telegram_poller(
    *,
    client: TelegramClient,
    store: Cursors,
    ingest: Ingest,
    settings: TelegramSettings,
    allowed_updates: Sequence[str] = ALLOWED_UPDATES,
    backoff: PollBackoff | None = None,
    stats: TelegramPollerStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Long-poll getUpdates forever; every update is in the inbox before its offset is confirmed."""
    poller = _Poller(
        client=client,
        store=store,
        ingest=ingest,
        settings=settings,
        allowed_updates=allowed_updates,
        backoff=backoff or PollBackoff(),
        stats=stats or TelegramPollerStats(),
    )
    await poller.open()
    task_status.started()
    while True:
        updates = await poller.fetch()
        if updates:
            await poller.take(updates)


class _Poller:
    """The poller's state: the confirmed offset and the failed polls in a row."""

    def __init__(
        self,
        *,
        client: TelegramClient,
        store: Cursors,
        ingest: Ingest,
        settings: TelegramSettings,
        allowed_updates: Sequence[str],
        backoff: PollBackoff,
        stats: TelegramPollerStats,
    ) -> None:
        self.client = client
        self.store = store
        self.ingest = ingest
        self.settings = settings
        self.allowed_updates = allowed_updates
        self.backoff = backoff
        self.stats = stats
        self.offset: int | None = None
        self.failures = 0

    async def open(self) -> None:
        """Read the stored offset and leave webhook mode."""
        stored = await _until_stored(
            "get_cursor", partial(self.store.get_cursor, OFFSET_CURSOR), self.backoff, self.stats
        )
        if stored:
            try:
                self.offset = int(stored)
            except ValueError:
                log.error("telegram.offset_unreadable", value=stored[:40])
        self.stats.offset = self.offset
        await _leave_webhook_mode(self.client)
        log.info(
            "telegram.poller_started", offset=self.offset, timeout_s=self.settings.poll_timeout_s
        )

    async def fetch(self) -> list[Any] | None:
        """One getUpdates call; ``None`` after a failure (and its backoff)."""
        try:
            updates = await self.client.get_updates(
                offset=self.offset,
                timeout_s=self.settings.poll_timeout_s,
                allowed_updates=self.allowed_updates,
            )
        except TelegramApiError as exc:
            if exc.is_unauthorized:
                log.error("telegram.poll_unauthorized", status=exc.status, reason=exc.description)
                raise
            await self._back_off(exc)
            return None
        except TelegramError as exc:
            await self._back_off(exc)
            return None
        if self.failures:
            log.info("telegram.poll_recovered", failures=self.failures)
        self.failures = 0
        self.stats.failing = False
        return updates

    async def _back_off(self, exc: TelegramError) -> None:
        """Count and log a failed poll, then wait: the server's hint, else the backoff."""
        self.failures += 1
        stats = self.stats
        stats.failing = True
        api = exc if isinstance(exc, TelegramApiError) else None
        hint = api.retry_after_s if api is not None else None
        delay = hint if hint is not None else self.backoff.delay_s(self.failures)
        retry = {"retry_in_s": round(delay, 2), "failures": self.failures}
        if api is not None and api.is_conflict:
            stats.conflicts += 1
            log.warning("telegram.poll_conflict", reason=api.description, **retry)
        elif api is not None:
            stats.errors += 1
            log.warning("telegram.poll_failed", status=api.status, reason=api.description, **retry)
        else:
            stats.errors += 1
            log.warning("telegram.poll_failed", reason=str(exc), **retry)
        await trio.sleep(delay)

    async def take(self, updates: list[Any]) -> None:
        """Put a batch in the inbox, then confirm the offset past it."""
        stats = self.stats
        next_offset = self.offset
        for update in updates:
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                stats.malformed += 1
                log.error("telegram.update_rejected", reason="no integer update_id")
                continue
            stats.updates += 1
            await _ingest_one(
                update,
                ingest=self.ingest,
                backoff=self.backoff,
                stats=stats,
                staff_chat_id=self.settings.staff_chat_id,
            )
            next_offset = update_id + 1 if next_offset is None else max(next_offset, update_id + 1)
        if next_offset is not None and next_offset != self.offset:
            await _until_stored(
                "set_cursor",
                partial(self.store.set_cursor, OFFSET_CURSOR, str(next_offset)),
                self.backoff,
                stats,
            )
            self.offset = next_offset
            stats.offset = next_offset


async def _ingest_one(
    update: dict[str, Any],
    *,
    ingest: Ingest,
    backoff: PollBackoff,
    stats: TelegramPollerStats,
    staff_chat_id: str | None,
) -> None:
    try:
        parsed = parse_update(update, staff_chat_id=staff_chat_id)
    except MalformedUpdate as exc:
        stats.malformed += 1
        log.error("telegram.update_rejected", update_id=update.get("update_id"), reason=str(exc))
        return
    if isinstance(parsed, Ignored):
        stats.ignored[parsed.reason] = stats.ignored.get(parsed.reason, 0) + 1
        log.debug("telegram.update_ignored", update_id=parsed.update_id, reason=parsed.reason)
        return
    accepted = await _until_stored("accept", partial(ingest.accept, parsed), backoff, stats)
    if accepted.is_new:
        stats.accepted += 1
    else:
        stats.duplicates += 1


async def _leave_webhook_mode(client: TelegramClient) -> None:
    """Polling needs no webhook; remove one left over, keeping its pending updates."""
    try:
        info = await client.get_webhook_info()
        if info.get("url"):
            await client.delete_webhook(drop_pending_updates=False)
            log.warning(
                "telegram.webhook_deleted",
                reason="polling mode",
                pending=info.get("pending_update_count"),
            )
    except TelegramError as exc:
        log.warning("telegram.webhook_check_failed", reason=str(exc))


async def run_telegram_webhook_setup(
    *,
    client: TelegramClient,
    settings: TelegramSettings,
    allowed_updates: Sequence[str] = ALLOWED_UPDATES,
    backoff: PollBackoff | None = None,
    check_interval_s: float = 300.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Register the webhook (retrying until Telegram accepts), then watch its delivery errors.

    Readiness does not wait for Telegram: ``task_status.started()`` comes first, so an
    unreachable Bot API delays registration, not the daemon.
    """
    if not settings.webhook_url or not settings.webhook_secret:
        raise ValueError("webhook mode needs TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET")
    backoff = backoff or PollBackoff()
    task_status.started()
    failures = 0
    while True:
        try:
            await client.set_webhook(
                url=settings.webhook_url,
                secret_token=settings.webhook_secret,
                allowed_updates=allowed_updates,
                max_connections=settings.max_connections,
            )
        except TelegramError as exc:
            if isinstance(exc, TelegramApiError) and not exc.is_transient:
                log.error("telegram.webhook_refused", status=exc.status, reason=exc.description)
                raise
            failures += 1
            delay = backoff.delay_s(failures)
            if isinstance(exc, TelegramApiError) and exc.retry_after_s is not None:
                delay = exc.retry_after_s
            log.warning(
                "telegram.webhook_setup_failed", reason=str(exc), retry_in_s=round(delay, 2)
            )
            await trio.sleep(delay)
            continue
        log.info(
            "telegram.webhook_set",
            max_connections=settings.max_connections,
            allowed_updates=list(allowed_updates),
        )
        break
    last_error_date: Any = None
    while True:
        await trio.sleep(check_interval_s)
        try:
            info = await client.get_webhook_info()
        except TelegramError as exc:
            log.warning("telegram.webhook_check_failed", reason=str(exc))
            continue
        error_date = info.get("last_error_date")
        if error_date and error_date != last_error_date:
            last_error_date = error_date
            log.warning(
                "telegram.webhook_delivery_failing",
                reason=info.get("last_error_message"),
                pending=info.get("pending_update_count"),
            )


async def run_telegram_typing(
    *,
    client: TelegramClient,
    presence: PresenceBoard,
    interval_s: float = 5.0,
    cap_s: float = 120.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Show "typing..." in a chat while its turn runs (or until ``cap_s``).

    Telegram shows the status for 5 s or until the next message, so it is re-sent every
    ``interval_s``, no more often. Best effort: a failed chat action is logged at debug
    and skipped; a 403 (the user blocked us) stops it for the turn.
    """

    async def typing(chat_id: str, correlation_id: str) -> bool:
        try:
            await client.send_chat_action(chat_id=chat_id, action="typing")
        except TelegramError as exc:
            log.debug("telegram.typing_failed", correlation_id=correlation_id, reason=str(exc))
            return not (isinstance(exc, TelegramApiError) and exc.status == 403)
        return True

    await run_presence(
        board=presence,
        start=typing,
        repeat=typing,
        interval_s=interval_s,
        cap_s=cap_s,
        task_status=task_status,
    )
