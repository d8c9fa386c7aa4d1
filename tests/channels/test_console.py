from __future__ import annotations

import pytest
import trio

from concierge.channels import SendStatus, open_console
from concierge.channels.console import ConsoleSender
from concierge.protocol import Channel, OutboxRow
from tests.store.records import outbox_row

pytestmark = pytest.mark.anyio


def _row(outbox_id: int) -> OutboxRow:
    return outbox_row(Channel.CONSOLE, "u", f"réponse {outbox_id}", outbox_id=outbox_id)


async def test_rows_are_delivered_in_order_to_the_reader() -> None:
    sender, replies = open_console(capacity=4)
    assert sender.channel is Channel.CONSOLE
    for i in range(3):
        assert (await sender.send(_row(i))).status is SendStatus.SENT
    assert [replies.receive_nowait().outbox_id for _ in range(3)] == [0, 1, 2]


@pytest.mark.autojump
async def test_a_reader_that_does_not_keep_up_makes_the_row_retry() -> None:
    send, _receive = trio.open_memory_channel[OutboxRow](1)
    sender = ConsoleSender(send, timeout_s=1.0)
    assert (await sender.send(_row(1))).status is SendStatus.SENT
    result = await sender.send(_row(2))
    assert result.status is SendStatus.RETRY
    assert result.retry_after_s is not None


async def test_a_closed_console_gives_the_row_up() -> None:
    sender, replies = open_console()
    replies.close()
    assert (await sender.send(_row(1))).status is SendStatus.REJECTED
