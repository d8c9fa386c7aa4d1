"""Deliver one outbox row to WhatsApp through WAHA the way WAHA advises against bans.

For each row: ``sendSeen``; then per part ``startTyping``, a pause that grows with the
part's length (capped), ``stopTyping``, ``sendText``. Long replies are split at
paragraph or sentence ends. The outcome is a ``SendResult`` the outbox actor acts on.

Partial progress: when part *k* of *n* fails transiently, the parts already sent are
remembered per outbox id, so the retry resumes at part *k* instead of repeating the
earlier ones. The memory is per process: a crash between parts may repeat the parts
sent before it (the outbox's at-most-one-duplicate-per-crash promise, per part).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio

from concierge.channels.base import SendResult, SendStatus
from concierge.channels.split import split_text
from concierge.channels.waha_client import WahaCall, WahaClient
from concierge.channels.waha_wire import parse_chat_id
from concierge.protocol import Channel, OutboxRow
from concierge.settings import WahaSettings

__all__ = ["WahaPacing", "WahaSender", "classify_call"]

log = structlog.get_logger(__name__)

# A rejected API key is our configuration, not the message's fault: retry slowly until fixed.
AUTH_RETRY_S = 60.0
# Outbox ids whose partial progress is remembered at most (oldest forgotten first).
MAX_PROGRESS_ENTRIES = 1024


@attrs.frozen(kw_only=True)
class WahaPacing:
    """How human the reply looks: typing speed, the longest pause, the part size."""

    typing_chars_per_s: float = 40.0
    typing_max_s: float = 4.0
    jitter: float = 0.2
    max_part_chars: int = 4000

    @classmethod
    def from_settings(cls, settings: WahaSettings) -> WahaPacing:
        return cls(
            typing_chars_per_s=settings.typing_chars_per_s,
            typing_max_s=settings.typing_max_s,
            max_part_chars=settings.max_part_chars,
        )

    def typing_delay_s(self, text: str, rng: random.Random) -> float:
        """Seconds of "typing..." before ``text``: its length at the typing speed, ±jitter, capped."""
        if self.typing_max_s <= 0 or self.typing_chars_per_s <= 0:
            return 0.0
        spread = rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.typing_max_s, max(0.0, len(text) / self.typing_chars_per_s * spread))


def classify_call(call: WahaCall, *, step: str) -> SendResult:
    """What a failed WAHA call means for the row: retry later, or give it up."""
    status = call.status_code
    detail = f"{step}: {call.detail or status}"
    if status is None or status == 408 or status == 429 or status >= 500:
        return SendResult(status=SendStatus.RETRY, detail=detail, retry_after_s=call.retry_after_s)
    if status in (401, 403):
        return SendResult(
            status=SendStatus.RETRY,
            detail=detail,
            retry_after_s=max(call.retry_after_s or 0.0, AUTH_RETRY_S),
        )
    if status == 422 and "session status" in call.detail.lower():
        # "Session status is not as expected": the session is STARTING or reconnecting.
        return SendResult(status=SendStatus.RETRY, detail=detail, retry_after_s=call.retry_after_s)
    return SendResult(status=SendStatus.REJECTED, detail=detail)


class WahaSender:
    """A ``ChannelSender`` for ``Channel.WAHA``; the outbox actor drives it."""

    def __init__(
        self,
        *,
        client: WahaClient,
        pacing: WahaPacing,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._pacing = pacing
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._progress: OrderedDict[int, int] = OrderedDict()

    @property
    def channel(self) -> Channel:
        return Channel.WAHA

    def parts_of(self, text: str) -> tuple[str, ...]:
        """How ``text`` is split into messages (deterministic: a retry sees the same parts)."""
        return split_text(text, limit=self._pacing.max_part_chars)

    async def send(self, row: OutboxRow) -> SendResult:
        """Deliver the row's remaining parts; never raises for WAHA or network errors."""
        log_ = log.bind(correlation_id=row.correlation_id, outbox_id=row.outbox_id)
        try:
            chat_id = parse_chat_id(row.chat_id).value
        except ValueError as exc:
            return self._give_up(row, f"bad chat id: {exc}", log_)
        parts = self.parts_of(row.text)
        if not parts:
            return self._give_up(row, "the reply is empty", log_)
        done = self._progress.get(row.outbox_id, 0)
        cid = row.correlation_id
        if done == 0:
            seen = await self._client.send_seen(chat_id, correlation_id=cid)
            if (failed := self._presence_failed(seen, "sendSeen", log_)) is not None:
                return self._retry(row, failed, log_)
        for index in range(done, len(parts)):
            part = parts[index]
            typing = await self._client.start_typing(chat_id, correlation_id=cid)
            if (failed := self._presence_failed(typing, "startTyping", log_)) is not None:
                return self._retry(row, failed, log_)
            delay_s = self._pacing.typing_delay_s(part, self._rng)
            if delay_s > 0:
                await self._sleep(delay_s)
            stopped = await self._client.stop_typing(chat_id, correlation_id=cid)
            if not stopped.ok:  # sending clears "typing..." anyway; let sendText decide
                log_.debug(
                    "waha.stop_typing_failed", status=stopped.status_code, detail=stopped.detail
                )
            sent = await self._client.send_text(chat_id, part, correlation_id=cid)
            if not sent.ok:
                result = classify_call(sent, step=f"sendText part {index + 1}/{len(parts)}")
                if result.status is SendStatus.RETRY:
                    return self._retry(row, result, log_)
                return self._give_up(row, result.detail, log_)
            self._remember(row.outbox_id, index + 1)
        self._progress.pop(row.outbox_id, None)
        log_.info("waha.reply_sent", parts=len(parts), resumed_at=done + 1 if done else None)
        return SendResult(status=SendStatus.SENT, detail=f"{len(parts)} part(s)")

    def _presence_failed(
        self, call: WahaCall, step: str, log_: structlog.stdlib.BoundLogger
    ) -> SendResult | None:
        """A transient presence failure aborts the attempt (WAHA is down); others are skipped."""
        if call.ok:
            return None
        result = classify_call(call, step=step)
        if result.status is SendStatus.RETRY:
            return result
        log_.debug("waha.presence_failed", step=step, status=call.status_code, detail=call.detail)
        return None

    def _retry(
        self, row: OutboxRow, result: SendResult, log_: structlog.stdlib.BoundLogger
    ) -> SendResult:
        log_.warning(
            "waha.send_deferred",
            detail=result.detail,
            retry_after_s=result.retry_after_s,
            parts_done=self._progress.get(row.outbox_id, 0),
        )
        return result

    def _give_up(
        self, row: OutboxRow, detail: str, log_: structlog.stdlib.BoundLogger
    ) -> SendResult:
        self._progress.pop(row.outbox_id, None)
        log_.error("waha.send_rejected", detail=detail)
        return SendResult(status=SendStatus.REJECTED, detail=detail)

    def _remember(self, outbox_id: int, parts_done: int) -> None:
        self._progress[outbox_id] = parts_done
        self._progress.move_to_end(outbox_id)
        while len(self._progress) > MAX_PROGRESS_ENTRIES:
            self._progress.popitem(last=False)
