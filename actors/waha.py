"""WAHA's side actors: "seen" and "typing..." during a turn, and a watch on the WhatsApp session.

``run_waha_presence`` follows the WAHA presence board: it marks the chat read and
starts typing when a turn starts, repeats ``startTyping`` while it lasts (capped) and
stops typing when it ends; best effort, failures are
logged at debug. ``run_waha_session_watch`` polls the session's status for ``/health``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog
import trio
from prometheus_client.core import GaugeMetricFamily, Metric

from actors.presence import PresenceBoard, run_presence
from concierge.channels import WahaCall, WahaClient
from concierge.observability import Check, Status
from concierge.protocol import utcnow

__all__ = ["WahaSessionWatch", "run_waha_presence", "run_waha_session_watch"]

log = structlog.get_logger(__name__)


async def run_waha_presence(
    *,
    client: WahaClient,
    presence: PresenceBoard,
    interval_s: float = 10.0,
    cap_s: float = 120.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mark the chat read and keep "typing..." while its turn runs (or until ``cap_s``)."""

    async def start_typing(chat_id: str, correlation_id: str) -> bool:
        seen = await client.send_seen(chat_id, correlation_id=correlation_id)
        _log_failure(seen, "sendSeen", correlation_id)
        return await keep_typing(chat_id, correlation_id)

    async def keep_typing(chat_id: str, correlation_id: str) -> bool:
        typing = await client.start_typing(chat_id, correlation_id=correlation_id)
        _log_failure(typing, "startTyping", correlation_id)
        return True

    async def stop_typing(chat_id: str, correlation_id: str) -> None:
        stopped = await client.stop_typing(chat_id, correlation_id=correlation_id)
        _log_failure(stopped, "stopTyping", correlation_id)

    await run_presence(
        board=presence,
        start=start_typing,
        repeat=keep_typing,
        stop=stop_typing,
        interval_s=interval_s,
        cap_s=cap_s,
        task_status=task_status,
    )


def _log_failure(call: WahaCall, step: str, correlation_id: str) -> None:
    """Presence is best effort: a failed call is only worth a debug line."""
    if not call.ok:
        log.debug(
            "waha.presence_failed",
            step=step,
            correlation_id=correlation_id,
            status=call.status_code,
        )


class WahaSessionWatch:
    """The last seen WhatsApp session status; ``WORKING`` passes, anything else warns.

    A warning, not a failure: webhooks still reach the inbox and replies wait in the
    outbox until the session works again, so readiness must not drop.
    """

    def __init__(self, *, session: str) -> None:
        self.session = session
        self.status: str | None = None
        self.detail = "not checked yet"
        self.checked_at: datetime | None = None

    def update(self, *, status: str | None, detail: str, at: datetime) -> None:
        if self.checked_at is None or status != self.status:
            event = "waha.session_working" if status == "WORKING" else "waha.session_not_working"
            (log.info if status == "WORKING" else log.warning)(
                event, session=self.session, status=status, detail=detail
            )
        self.status, self.detail, self.checked_at = status, detail, at

    def health_checks(self) -> Iterable[Check]:
        working = self.status == "WORKING"
        yield Check(
            component="waha",
            measurement="session",
            component_id=self.session,
            status=Status.PASS if working else Status.WARN,
            observed_value=self.status,
            output=None if working else self.detail,
            time=self.checked_at,
        )

    def metrics(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "concierge_waha_session_working",
            "1 when the WhatsApp session is WORKING",
            labels=["session"],
        )
        gauge.add_metric([self.session], 1.0 if self.status == "WORKING" else 0.0)
        yield gauge


async def run_waha_session_watch(
    *,
    client: WahaClient,
    watch: WahaSessionWatch,
    interval_s: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ask WAHA for the session's status every ``interval_s`` (``GET /api/sessions/{session}``)."""
    task_status.started()
    while True:
        call = await client.session_status()
        body = call.body if isinstance(call.body, dict) else {}
        status = body.get("status") if call.ok else None
        if call.ok and isinstance(status, str):
            watch.update(status=status, detail=f"session {status}", at=utcnow())
        else:
            watch.update(status=None, detail=session_problem(call), at=utcnow())
        await trio.sleep(interval_s)


def session_problem(call: WahaCall) -> str:
    """What was wrong with WAHA's answer about the session, in words for ``/health``."""
    if call.status_code is None:
        return f"WAHA did not answer: {call.detail}"
    if not call.ok:
        return f"WAHA refused the session status request: {call.detail or call.status_code}"
    if not isinstance(call.body, dict):
        return f"WAHA answered {call.status_code} without a JSON object"
    if "status" not in call.body:
        return f"WAHA answered {call.status_code} without a session status"
    return f"WAHA answered {call.status_code} with a session status that is not a string"
