"""Deliver one outbox row to Telegram: format, split, send the parts in order, classify failures.

A reply longer than one message is sent as several parts. When a part fails, the
parts already delivered are remembered (in memory, and in the row's ``last_error`` as
``parts_sent=N/M;`` which the outbox actor stores), so the retry starts at the part
that failed. Only a crash between a delivered part and that record resends a part:
the same at-most-one-duplicate-per-crash bound the outbox gives single messages.
A part the platform rejects for good ends the row: the parts after it are not sent.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import structlog

from concierge.channels.base import SendResult, SendStatus
from concierge.channels.telegram_client import (
    TelegramApiError,
    TelegramClient,
    TelegramError,
    TelegramNetworkError,
)
from concierge.channels.telegram_format import TELEGRAM_MAX_UNITS, Part, format_reply
from concierge.protocol import Channel, OutboxRow

log = structlog.get_logger(__name__)

_PROGRESS = re.compile(r"^parts_sent=(\d+)/(\d+);")


def classify(exc: TelegramError) -> SendResult:
    """What the outbox should do after ``exc``: retry, give the row up, or stop writing the user."""
    if isinstance(exc, TelegramNetworkError) or not isinstance(exc, TelegramApiError):
        return SendResult(status=SendStatus.RETRY, detail=str(exc))
    if exc.status == 429:
        return SendResult(
            status=SendStatus.RETRY, detail=exc.description, retry_after_s=exc.retry_after_s
        )
    if exc.status == 403:  # blocked, deactivated, kicked: the user is out of reach
        return SendResult(status=SendStatus.UNREACHABLE, detail=exc.description)
    if exc.status in (401, 404) or exc.status >= 500:  # a bad token is fixed by the operator
        return SendResult(
            status=SendStatus.RETRY, detail=exc.description, retry_after_s=exc.retry_after_s
        )
    return SendResult(status=SendStatus.REJECTED, detail=exc.description)


class TelegramSender:
    """``ChannelSender`` for Telegram (HTML parse mode, plain-text fallback per part)."""

    def __init__(
        self, *, client: TelegramClient, limit: int = TELEGRAM_MAX_UNITS, max_tracked: int = 10_000
    ) -> None:
        self._client = client
        self._limit = limit
        self._max_tracked = max_tracked
        self._progress: OrderedDict[int, int] = OrderedDict()
        self.plain_fallbacks = 0

    @property
    def channel(self) -> Channel:
        return Channel.TELEGRAM

    def _start(self, row: OutboxRow, total: int) -> int:
        if row.outbox_id in self._progress:
            return self._progress[row.outbox_id]
        match = _PROGRESS.match(row.last_error or "")
        if match and int(match.group(2)) == total:
            return min(int(match.group(1)), total)
        return 0

    def _remember(self, outbox_id: int, sent: int) -> None:
        self._progress[outbox_id] = sent
        self._progress.move_to_end(outbox_id)
        while len(self._progress) > self._max_tracked:
            self._progress.popitem(last=False)

    async def send(self, row: OutboxRow) -> SendResult:
        parts = format_reply(row.text, limit=self._limit)
        if not parts:
            return SendResult(status=SendStatus.REJECTED, detail="the reply is empty")
        start = self._start(row, len(parts))
        sent: list[str] = []
        for index in range(start, len(parts)):
            failure = await self._send_part(row, parts[index], sent)
            if failure is not None:
                if failure.status is SendStatus.RETRY:
                    self._remember(row.outbox_id, index)
                else:
                    self._progress.pop(row.outbox_id, None)
                if index > 0:
                    log.info(
                        "telegram.reply_interrupted",
                        correlation_id=row.correlation_id,
                        outbox_id=row.outbox_id,
                        parts_sent=index,
                        parts=len(parts),
                    )
                return SendResult(
                    status=failure.status,
                    detail=f"parts_sent={index}/{len(parts)}; {failure.detail}",
                    retry_after_s=failure.retry_after_s,
                )
        self._progress.pop(row.outbox_id, None)
        return SendResult(
            status=SendStatus.SENT, detail=f"{len(parts)} part(s)", message_ids=tuple(sent)
        )

    async def _send_part(self, row: OutboxRow, part: Part, sent: list[str]) -> SendResult | None:
        """Send one part (HTML, or plain text if Telegram cannot parse it); note its message id."""
        try:
            message = await self._client.send_message(
                chat_id=row.chat_id, text=part.html, parse_mode="HTML"
            )
        except TelegramApiError as exc:
            if not exc.cannot_parse_entities:
                return classify(exc)
            log.warning(
                "telegram.html_rejected",
                correlation_id=row.correlation_id,
                outbox_id=row.outbox_id,
                reason=exc.description,
            )
        except TelegramError as exc:
            return classify(exc)
        else:
            _note_message_id(message, sent)
            return None
        self.plain_fallbacks += 1
        try:
            message = await self._client.send_message(chat_id=row.chat_id, text=part.plain)
        except TelegramError as exc:
            return classify(exc)
        _note_message_id(message, sent)
        return None


def _note_message_id(message: dict[str, object], sent: list[str]) -> None:
    message_id = message.get("message_id")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        sent.append(str(message_id))
