"""A message from the staff chat, acted on: answer a handoff's user, close it, or say how.

The staff desk actor calls ``handle_staff_message`` for each ``STAFF`` inbox row. The
row is settled in the same transaction as what it did (a reply's outbox row, or the
desk's answer in the staff chat), so a replay after a crash does nothing twice; a
close is settled right after it, and its replay only finds the handoff closed.
"""

from __future__ import annotations

import structlog

from concierge.domain.desk import Desk, Operator
from concierge.domain.errors import HandoffNotActive, NoSuchHandoff
from concierge.domain.nudges import nudge_outbox
from concierge.domain.replies import Reply
from concierge.domain.staff_commands import StaffAction, StaffCommand, parse_staff_command
from concierge.domain.staff_notices import StaffChat
from concierge.protocol import Inbound, TurnRecord

log = structlog.get_logger(__name__)

STAFF_ROLE = "staff"
VIA_STAFF_CHAT = "staff_chat"


def staff_member(msg: Inbound) -> str:
    """How a staff chat member is named in the audit trail and the console: ``Bob (telegram:42)``."""
    who = msg.user_key.removeprefix("staff:")
    return f"{msg.display_name} ({who})" if msg.display_name else who


async def handle_staff_message(desk: Desk, msg: Inbound) -> str:
    """Do what ``msg`` asks; return what became of it (``replied``, ``closed``, ``ignored``, ...)."""
    replying_to = None
    if msg.reply_to is not None:
        replying_to = await desk.store.handoff_for_staff_message(
            msg.channel, msg.chat_id, msg.reply_to
        )
    command = parse_staff_command(msg.text, replying_to=replying_to)
    if command is None:
        await desk.store.mark_processed(msg.inbox_id)
        return "ignored"
    operator = Operator(
        name=staff_member(msg),
        role=STAFF_ROLE,
        via=VIA_STAFF_CHAT,
        correlation_id=msg.correlation_id,
    )
    if command.action is StaffAction.HELP or command.handoff_id is None:
        await _answer(desk, msg, Reply.STAFF_HELP)
        return "help"
    handoff_id = command.handoff_id
    try:
        return await _act(desk, operator, msg, command, handoff_id)
    except NoSuchHandoff:
        await _answer(desk, msg, Reply.STAFF_NO_HANDOFF, handoff_id=handoff_id)
        return "no_such_handoff"
    except HandoffNotActive:
        await _answer(desk, msg, Reply.STAFF_NOT_ACTIVE, handoff_id=handoff_id)
        return "not_active"


async def _act(
    desk: Desk, operator: Operator, msg: Inbound, command: StaffCommand, handoff_id: int
) -> str:
    if command.action is StaffAction.CLOSE:
        await desk.close(operator, handoff_id)
        await desk.store.mark_processed(msg.inbox_id)
        return "closed"
    if not command.text:
        await _answer(desk, msg, Reply.STAFF_NO_TEXT, handoff_id=handoff_id)
        return "no_text"
    replied = await desk.reply(operator, handoff_id, command.text, inbox_id=msg.inbox_id)
    return "replied" if replied is not None else "replayed"


async def _answer(desk: Desk, msg: Inbound, reply: Reply, **params: object) -> None:
    """Answer in the staff chat the message came from, settling its row at once."""
    staff = StaffChat(channel=msg.channel, chat_id=msg.chat_id)
    text = desk.languages.reply(reply, desk.languages.default, **params)
    written = await desk.store.complete_turn(
        TurnRecord(
            inbox_id=msg.inbox_id,
            conversation_id=None,
            correlation_id=msg.correlation_id,
            service_type=None,
            replies=(staff.message(text, correlation_id=msg.correlation_id),),
        )
    )
    if written:
        nudge_outbox(desk.nudges, staff.channel, msg.correlation_id)
