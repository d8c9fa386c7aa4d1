"""``concierge chat``: a console channel over the full pipeline, for a person or a script.

Each line read becomes an inbound message of ``Channel.CONSOLE`` accepted into the
durable inbox like a webhook would; the same router, conversation actors, provider
pool and outbox answer it. Replies are printed one per line (one JSON object per
reply with ``--json``), in order, each after its turn completed.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TextIO

import structlog
import trio

from concierge.app.runtime import REPORT_QUEUE, log_to_stderr, open_runtime
from concierge.app.tree import build_tree
from concierge.channels import open_console
from concierge.protocol import (
    Accepted,
    Channel,
    InboundKind,
    InboundMessage,
    OutboxRow,
    TurnCompleted,
    new_correlation_id,
    utcnow,
)
from concierge.settings import Settings
from concierge.store import StoreUnavailable

log = structlog.get_logger(__name__)

ANSWER_MARGIN_S = 10.0
"""How much longer than one turn's budget a line waits for its answer."""


def main(settings: Settings, *, as_json: bool, user: str) -> int:
    log_to_stderr(settings)  # replies own stdout
    code: int = trio.run(run_chat, settings, as_json, user)
    return code


async def _stdin_lines() -> AsyncIterator[str]:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("vous › ", end="", file=sys.stderr, flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return
        yield line


def _kind_of(text: str) -> InboundKind:
    return InboundKind.COMMAND if text.startswith("/") else InboundKind.TEXT


async def run_chat(
    settings: Settings,
    as_json: bool,
    user: str,
    *,
    lines: Callable[[], AsyncIterator[str]] = _stdin_lines,
    out: TextIO | None = None,
) -> int:
    """Answer every line in order; return 0, or 1 if a line got no answer in time."""
    stream = out if out is not None else sys.stdout
    user_key = f"console:{user}"
    wait_s = settings.conversation.turn_timeout_s + ANSWER_MARGIN_S
    failures = 0
    async with open_runtime(settings, channels=[Channel.CONSOLE]) as rt:
        sender, deliveries = open_console()
        reports_send, reports_receive = trio.open_memory_channel[TurnCompleted](REPORT_QUEUE)
        root = build_tree(rt, senders=[sender], http=False, turn_reports=reports_send)
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            nursery.start_soon(_screen, deliveries)
            with reports_receive:
                async for line in lines():
                    text = line.strip()
                    if not text:
                        continue
                    report = await _one_turn(
                        rt.ingest.accept, reports_receive, user_key, user, text, wait_s
                    )
                    if report is None:
                        failures += 1
                        print(f"concierge: no answer within {wait_s:g} s", file=sys.stderr)
                        continue
                    _print(stream, report, as_json=as_json)
            with trio.move_on_after(settings.drain_timeout_s):
                await root.shutdown()
            nursery.cancel_scope.cancel()
    return 1 if failures else 0


async def _one_turn(
    accept: Callable[[InboundMessage], Awaitable[Accepted]],
    reports: trio.MemoryReceiveChannel[TurnCompleted],
    user_key: str,
    user: str,
    text: str,
    wait_s: float,
) -> TurnCompleted | None:
    message = InboundMessage(
        correlation_id=new_correlation_id(),
        channel=Channel.CONSOLE,
        user_key=user_key,
        chat_id=user,
        external_id=uuid.uuid4().hex,
        text=text,
        kind=_kind_of(text),
        received_at=utcnow(),
        display_name=user,
    )
    with trio.move_on_after(wait_s):
        try:
            accepted = await accept(message)
        except StoreUnavailable as exc:
            print(f"concierge: the store is unavailable: {exc}", file=sys.stderr)
            return None
        async for report in reports:
            if report.inbox_id == accepted.inbox_id:
                return report
    return None


def _print(stream: TextIO, report: TurnCompleted, *, as_json: bool) -> None:
    if as_json:
        line = json.dumps(
            {
                "reply": report.reply,
                "service_type": report.service_type.value,
                "provider": report.provider,
                "correlation_id": report.correlation_id,
                "latency_ms": round(report.latency_s * 1000, 1),
            },
            ensure_ascii=False,
        )
        print(line, file=stream, flush=True)
    elif report.reply:
        print(report.reply, file=stream, flush=True)


async def _screen(deliveries: trio.MemoryReceiveChannel[OutboxRow]) -> None:
    """The console's side of the outbox: rows are taken (and so marked sent) as they arrive."""
    with deliveries:
        async for row in deliveries:
            log.debug("chat.delivered", correlation_id=row.correlation_id, outbox_id=row.outbox_id)
