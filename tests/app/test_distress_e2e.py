"""A person in distress reaches a person with every provider down: the daemon end to end.

The daemon's own tree (SQLite, memory cache, conversations, outbox, Telegram poller,
HTTP app) against the Telegram fake, staff chat included; its only provider is the
Anthropic fake, answering 529 (overloaded) until its circuit breaker opens.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from concierge.domain import Reply
from tests import shipped
from tests.app.running import daemon_settings, running_daemon
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import eventually, owes_nothing

pytestmark = pytest.mark.anyio

PERSON = 333333333
STAFF_CHAT = -1001234567


async def test_with_every_provider_down_the_person_and_the_staff_chat_are_told(
    tmp_path: Path,
) -> None:
    telegram = FakeTelegram()
    async with FakeAnthropic.serve() as anthropic, telegram.serve():
        anthropic.default = FakeAnthropic.overloaded()
        settings = daemon_settings(
            tmp_path,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE_URL=telegram.url,
            TELEGRAM_POLL_TIMEOUT_S="1",
            CONCIERGE_PROVIDERS="anthropic",
            ANTHROPIC_API_KEYS="main=sk-ant-fake-key-for-tests",
            ANTHROPIC_BASE_URL=anthropic.url,
            CONCIERGE_MAX_ATTEMPTS="2",
            CONCIERGE_BREAKER_CONSECUTIVE="2",
            CONCIERGE_STAFF_CHANNEL="telegram",
            CONCIERGE_STAFF_CHAT_ID=str(STAFF_CHAT),
        )
        async with running_daemon(settings) as rt, httpx.AsyncClient() as http:
            base = rt.http_binds[0]
            telegram.add_update(
                telegram.text_message(user_id=PERSON, text="A quelle heure est la messe ?")
            )
            await eventually(lambda: len(telegram.texts_to(PERSON)) == 1, "the first answer")
            assert telegram.texts_to(PERSON) == [shipped.reply_text(Reply.PROVIDER_FAILED, "fr")]
            health = (await http.get(f"{base}/health")).json()
            (circuit,) = health["checks"]["llm:circuit"]
            assert (circuit["componentId"], circuit["status"]) == ("anthropic", "warn")
            assert circuit["observedValue"] == "open"
            asked = len(anthropic.requests)

            telegram.add_update(
                telegram.text_message(
                    user_id=PERSON, text="je ne supporte plus rien, j'ai envie d'en finir"
                )
            )
            await eventually(lambda: len(telegram.texts_to(PERSON)) == 2, "the emergency reply")
            await eventually(lambda: bool(telegram.texts_to(STAFF_CHAT)), "the staff notice")
            reply = telegram.texts_to(PERSON)[1]
            assert reply.startswith("Merci de m'avoir écrit.")
            assert "– SAMU (urgence médicale) : 1515" in reply
            assert "Prêtre de permanence, jour et nuit : +221 77 000 00 00" in reply
            (notice,) = telegram.texts_to(STAFF_CHAT)
            assert notice.startswith("🚨 URGENT (idées de suicide ou d'automutilation)")
            assert len(anthropic.requests) == asked  # no provider was asked

            await eventually(
                lambda: (
                    rt.board.report()[0]["checks"]["handoffs:urgentOpen"][0]["observedValue"] == 1
                ),
                "the urgent handoff to be counted",
            )
            health = (await http.get(f"{base}/health")).json()
            (urgent,) = health["checks"]["handoffs:urgentOpen"]
            assert (urgent["status"], urgent["observedValue"]) == ("warn", 1)
            assert any("urgent handoff" in note for note in health["notes"])
            metrics = (await http.get(f"{base}/metrics")).text
            assert "concierge_urgent_handoffs_open 1.0" in metrics
            assert 'concierge_urgent_handoffs_total{source="rules"} 1.0' in metrics

            telegram.add_update(telegram.text_message(user_id=PERSON, text="vous êtes là ?"))
            await eventually(owes_nothing(rt.store), "the store to owe no further reply")
            assert len(telegram.texts_to(PERSON)) == 2  # silent: a person takes over
