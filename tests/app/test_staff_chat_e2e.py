"""The staff chat end to end: a Telegram group answering a user by replying to the bot's notice.

The composed daemon polls the fake Bot API; the notice it sends to the staff group is
recorded under the message id Telegram gave it, so a staff member's reply to that
message reaches the user, through the durable inbox and outbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from concierge.domain import Reply as R
from tests.app.test_channels_e2e import daemon
from tests.fakes.telegram_api import FakeTelegram
from tests.shipped import reply_text
from tests.waiting import eventually, owes_nothing

pytestmark = pytest.mark.anyio

USER = 4440001
STAFF_CHAT = -1001234567890
BOT = {"id": 222222222, "is_bot": True, "first_name": "Parish Bot"}


async def test_a_reply_to_the_notice_in_the_staff_group_reaches_the_user(tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with (
        fake.serve(),
        daemon(
            tmp_path,
            TELEGRAM_BOT_TOKEN=fake.token,
            TELEGRAM_API_BASE_URL=fake.url,
            TELEGRAM_POLL_TIMEOUT_S="1",
            CONCIERGE_STAFF_CHANNEL="telegram",
            CONCIERGE_STAFF_CHAT_ID=str(STAFF_CHAT),
        ) as rt,
    ):
        fake.add_update(fake.text_message(user_id=USER, text="/humain", first_name="Ana"))
        await eventually(lambda: bool(fake.texts_to(STAFF_CHAT)), "the notice in the staff chat")
        (notice,) = [m for m in fake.sent if m.chat_id == str(STAFF_CHAT)]
        assert "Demande de contact n°1" in notice.text
        assert "Ana" in notice.text

        def in_group(text: str, **extra: Any) -> dict[str, Any]:
            return fake.text_message(
                user_id=42,
                text=text,
                chat_id=STAFF_CHAT,
                chat_type="supergroup",
                first_name="Bob",
                **extra,
            )

        fake.add_update(in_group("On se voit à 18h ?"))  # chatter: left alone
        fake.add_update(
            in_group(
                "Bonjour Ana, je vous rappelle.",
                reply_to_message={"message_id": notice.message_id, "from": BOT},
            )
        )
        answer = reply_text(R.STAFF_REPLY, "fr", text="Bonjour Ana, je vous rappelle.")
        await eventually(lambda: answer in fake.texts_to(USER), "the staff answer in Ana's chat")

        fake.add_update(fake.text_message(user_id=USER, text="Merci !", first_name="Ana"))
        await eventually(
            lambda: any("Merci !" in t for t in fake.texts_to(STAFF_CHAT)),
            "Ana's thanks forwarded to the staff chat",
        )

        fake.add_update(in_group("/close@parish_bot 1"))
        await eventually(
            lambda: reply_text(R.HANDOFF_CLOSED, "fr") in fake.texts_to(USER), "Ana told it is over"
        )
        await eventually(owes_nothing(rt.store), "every message handled and every reply sent")
        assert len(fake.texts_to(USER)) == 3  # opened, the staff answer, closed
        assert [t for t in fake.texts_to(STAFF_CHAT) if "18h" in t] == []
