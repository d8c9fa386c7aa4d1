"""One person on Telegram and WhatsApp: linking by code, live, through both platforms' fakes.

The daemon's own tree (SQLite or PostgreSQL, memory cache, conversations, outbox,
Telegram poller, WAHA webhook) with the Telegram and WAHA fakes for the platforms and
the Anthropic fake as the only provider, which records every request it is sent.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio_asyncio

from concierge.app.api import Role, issue_token
from concierge.app.runtime import Runtime
from concierge.domain import Reply, forget_user
from concierge.protocol import person_key, utcnow
from concierge.store import migrate
from concierge.store.postgres import PostgresStore
from concierge.store.sqlite import SqliteStore
from tests import shipped
from tests.app.running import daemon_settings, running_daemon
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.llm_common import Scripted
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.waha_api import FakeWaha, RetryPolicy, WahaWebhookPusher, message_event
from tests.waiting import eventually, owes_nothing

pytestmark = pytest.mark.anyio

TG = 555000111
WA_CHAT = "221770000042@c.us"
WA = f"waha:{WA_CHAT}"
HMAC_KEY = "link-test-hmac-key"
CODE = re.compile(r"(\d{3}) (\d{3})")
ANSWER = "Voici la réponse de la paroisse."


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` for SQLite; a fresh PostgreSQL database, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    name = f"concierge_link_{int(time.time() * 1000) % 10**9}_{id(request) % 10**6}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


@attrs.define
class Both:
    """The daemon with both channels, and what a test does through them."""

    rt: Runtime
    telegram: FakeTelegram
    waha: FakeWaha
    llm: FakeAnthropic
    pusher: WahaWebhookPusher

    def telegram_says(self, text: str) -> None:
        self.telegram.add_update(self.telegram.text_message(user_id=TG, text=text))

    async def whatsapp_says(self, text: str) -> None:
        delivery = await self.pusher.deliver(message_event(chat_id=WA_CHAT, text=text))
        assert delivery.delivered

    def to_telegram(self) -> list[str]:
        return self.telegram.texts_to(TG)

    def to_whatsapp(self) -> list[str]:
        return [
            r.json["text"]
            for r in self.waha.requests_to("sendText")
            if isinstance(r.json, dict) and r.json.get("chatId") == WA_CHAT
        ]

    async def code_on_telegram(self) -> str:
        before = len(self.to_telegram())
        self.telegram_says("/lier")
        await eventually(lambda: len(self.to_telegram()) > before, "the link code")
        match = CODE.search(self.to_telegram()[-1])
        assert match is not None
        return match.group(1) + match.group(2)

    def asked(self) -> list[str]:
        """What each provider request carried: every message text, as one string."""
        return [
            json.dumps(r.json.get("messages", []), ensure_ascii=False)
            for r in self.llm.requests
            if isinstance(r.json, dict)
        ]

    async def user_id(self, user_key: str) -> int | None:
        row = await self.rt.store.user_for_key(user_key)
        return None if row is None else row.user_id


def _live(rt: Runtime) -> int:
    """Conversation actors alive now, as ``/health`` reports them."""
    report = rt.board.report()[0]["checks"]["conversations:live_actors"]
    return int(report[0]["observedValue"])


@asynccontextmanager
async def both(tmp_path: Path, database_url: str | None, **env: str) -> AsyncIterator[Both]:
    telegram = FakeTelegram()
    async with (
        telegram.serve(),
        FakeWaha.serve(api_key="waha-key") as waha,
        FakeAnthropic.serve() as llm,
    ):
        llm.default = Scripted(text=ANSWER)
        settings = daemon_settings(
            tmp_path,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE_URL=telegram.url,
            TELEGRAM_POLL_TIMEOUT_S="1",
            WAHA_URL=waha.url,
            WAHA_API_KEY="waha-key",
            WAHA_WEBHOOK_HMAC_KEY=HMAC_KEY,
            WAHA_TYPING_MAX_S="0",
            CONCIERGE_PROVIDERS="anthropic",
            ANTHROPIC_API_KEYS="main=sk-ant-fake-key-for-tests",
            ANTHROPIC_BASE_URL=llm.url,
            CONCIERGE_USER_RATE_PER_MIN="600",
            CONCIERGE_USER_BURST="50",
            **({"DATABASE_URL": database_url} if database_url else {}),
            **env,
        )
        if database_url is not None:
            async with trio_asyncio.open_loop():
                await migrate(settings.store)
        async with running_daemon(settings) as rt, httpx.AsyncClient(timeout=10) as http:
            pusher = WahaWebhookPusher.over_http(
                http,
                f"{rt.http_binds[0]}/webhooks/waha",
                hmac_key=HMAC_KEY,
                policy=RetryPolicy(attempts=3),
            )
            yield Both(rt=rt, telegram=telegram, waha=waha, llm=llm, pusher=pusher)


def text(reply: Reply, **values: object) -> str:
    return shipped.reply_text(reply, "fr", **values)


async def expire_codes(rt: Runtime) -> None:
    """Every live code expires now (behind the interface: minutes are not waited for)."""
    sql = "UPDATE link_codes SET expires_at = '2000-01-01T00:00:00.000000Z'"
    if isinstance(rt.store, PostgresStore):
        await rt.store.fetchval(sql.replace("Z'", "+00'"))
    else:
        assert isinstance(rt.store, SqliteStore)
        await rt.store._write(lambda conn: conn.execute(sql))


async def test_a_code_from_telegram_sent_on_whatsapp_links_them_and_shares_the_context(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url) as b:
        b.telegram_says("Quels sont les horaires des confessions au sanctuaire ?")
        await eventually(lambda: len(b.to_telegram()) == 1, "the Telegram answer")
        code = await b.code_on_telegram()
        assert b.to_whatsapp() == []  # the code is shown to that identity only

        await b.whatsapp_says(f"{code[:3]} {code[3:]}")

        await eventually(lambda: len(b.to_whatsapp()) == 1, "the WhatsApp confirmation")
        await eventually(lambda: len(b.to_telegram()) == 3, "the Telegram confirmation")
        assert b.to_whatsapp() == [text(Reply.LINK_DONE, channel="Telegram")]
        assert b.to_telegram()[-1] == text(Reply.LINK_DONE, channel="WhatsApp")
        assert "221770000042" not in b.to_telegram()[-1]
        tg_user = await b.user_id(f"telegram:{TG}")
        assert tg_user is not None
        assert await b.user_id(WA) == tg_user
        assert code not in "".join(b.asked())  # never in a prompt: not in the history

        asked = len(b.llm.requests)
        await b.whatsapp_says("Et le samedi, à quelle heure ?")
        await eventually(lambda: len(b.to_whatsapp()) == 2, "the WhatsApp answer")
        # The provider's request for the WhatsApp message carries the Telegram turn.
        assert len(b.llm.requests) == asked + 1
        assert "horaires des confessions au sanctuaire" in b.asked()[-1]
        await eventually(owes_nothing(b.rt.store), "nothing owed")
        await eventually(lambda: _live(b.rt) == 1, "one actor for the person")


async def test_wrong_and_expired_codes_are_refused_and_so_is_guessing(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url) as b:
        code = await b.code_on_telegram()
        await expire_codes(b.rt)
        await b.whatsapp_says(code)
        await eventually(lambda: len(b.to_whatsapp()) == 1, "the answer to an expired code")
        assert b.to_whatsapp() == [text(Reply.LINK_WRONG)]

        code = await b.code_on_telegram()
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for n in range(2, 6):  # four more wrong codes: five in the hour
            await b.whatsapp_says(wrong)
            await eventually(lambda n=n: len(b.to_whatsapp()) == n, "a wrong code's answer")
        assert b.to_whatsapp()[1:] == [text(Reply.LINK_WRONG)] * 4

        await b.whatsapp_says(code)  # the right one, too late
        await eventually(lambda: len(b.to_whatsapp()) == 6, "the refusal")
        assert b.to_whatsapp()[-1] == text(Reply.LINK_REFUSED)
        assert await b.user_id(WA) != await b.user_id(f"telegram:{TG}")

        # Telegram may still send the code it holds: its own tries are its own.
        await b.whatsapp_says("/lier")
        await eventually(lambda: len(b.to_whatsapp()) == 7, "WhatsApp's code")
        match = CODE.search(b.to_whatsapp()[-1])
        assert match is not None
        b.telegram_says(match.group(1) + match.group(2))
        await eventually(lambda: len(b.to_whatsapp()) == 8, "the confirmation on WhatsApp")
        assert await b.user_id(WA) == await b.user_id(f"telegram:{TG}")
        # A code serves once.
        b.telegram_says(match.group(1) + match.group(2))
        await eventually(lambda: len(b.to_telegram()) == 4, "the used code's answer")
        assert b.to_telegram()[-1] == text(Reply.LINK_WRONG)


async def test_a_link_while_both_sides_have_turns_in_flight_answers_each_once_in_order(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url) as b:
        code = await b.code_on_telegram()
        b.llm.hold()
        b.telegram_says("Q1 : quand a lieu le catéchisme des enfants ?")
        await b.llm.wait_in_flight(1)
        await b.whatsapp_says("W1 : où se trouve le secrétariat de la paroisse ?")
        await b.llm.wait_in_flight(2)
        await b.whatsapp_says(code)  # queued behind W1 in WhatsApp's actor
        b.telegram_says("Q2 : et pour les adultes ?")  # queued behind Q1 in Telegram's
        await eventually(
            lambda: b.rt.ingest.accepted >= 5, "every message in the inbox before the release"
        )
        b.llm.release()

        await eventually(lambda: len(b.to_whatsapp()) == 2, "W1's answer and the confirmation")
        await eventually(lambda: len(b.to_telegram()) == 4, "Q1, Q2 and the confirmation")
        b.telegram_says("Q3 : merci, et le dimanche ?")
        await eventually(lambda: len(b.to_telegram()) == 5, "Q3's answer")
        await b.whatsapp_says("W3 : et la messe en semaine ?")
        await eventually(lambda: len(b.to_whatsapp()) == 3, "W3's answer")
        await eventually(owes_nothing(b.rt.store), "nothing owed")

        # Per channel, in order: each question answered once, the confirmation after what
        # the other side's actor held, the later questions after it.
        done = text(Reply.LINK_DONE, channel="WhatsApp")
        assert b.to_telegram()[1:] == [ANSWER, ANSWER, done, ANSWER]
        assert b.to_whatsapp() == [ANSWER, text(Reply.LINK_DONE, channel="Telegram"), ANSWER]
        assert len(b.llm.requests) == 5  # Q1, W1, Q2, Q3, W3: none asked twice
        # The merged history holds every turn, Q3's prompt both sides' earlier questions.
        assert "Q1" in b.asked()[-2]
        assert "W1" in b.asked()[-2]
        assert "Q3" in b.asked()[-1]
        await eventually(lambda: _live(b.rt) == 1, "one actor for the person")


async def test_unlinking_gives_each_channel_its_own_conversation_again(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url) as b:
        await b.whatsapp_says("W1 : où se trouve le secrétariat de la paroisse ?")
        await eventually(lambda: len(b.to_whatsapp()) == 1, "W1's answer")
        code = await b.code_on_telegram()
        await b.whatsapp_says(code)
        await eventually(lambda: len(b.to_whatsapp()) == 2, "linked")

        b.telegram_says("/delier")
        await eventually(
            lambda: b.to_telegram()[-1] == text(Reply.UNLINK_DONE, channel="WhatsApp"), "unlinked"
        )
        assert await b.user_id(WA) != await b.user_id(f"telegram:{TG}")
        b.telegram_says("Q2 : quand a lieu le catéchisme ?")
        await eventually(lambda: len(b.llm.requests) == 2, "Q2 asked")
        assert "W1" not in b.asked()[-1]  # Telegram starts afresh
        await b.whatsapp_says("W2 : et le samedi ?")
        await eventually(lambda: len(b.llm.requests) == 3, "W2 asked")
        assert "W1" in b.asked()[-1]  # WhatsApp keeps the person's history
        await eventually(lambda: len(b.to_whatsapp()) == 3, "W2 answered")
        b.telegram_says("/delier")
        await eventually(
            lambda: b.to_telegram()[-1] == text(Reply.UNLINK_NONE), "nothing to unlink"
        )
        await eventually(owes_nothing(b.rt.store), "nothing owed")


async def test_erasing_a_linked_person_takes_every_identity_and_cache_entry(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url) as b:
        code = await b.code_on_telegram()
        await b.whatsapp_says(code)
        await eventually(lambda: len(b.to_whatsapp()) == 1, "linked")
        await b.whatsapp_says("W1 : où se trouve le secrétariat de la paroisse ?")
        await eventually(lambda: len(b.to_whatsapp()) == 2, "W1's answer")
        user_id = await b.user_id(WA)
        assert user_id is not None
        key = person_key(user_id)
        assert await b.rt.cache.get_context(key) is not None

        forgotten = await forget_user(b.rt.store, f"telegram:{TG}", cache=b.rt.cache)

        assert forgotten.user_id == user_id
        assert await b.user_id(WA) is None
        assert await b.user_id(f"telegram:{TG}") is None
        assert await b.rt.cache.get_context(key) is None
        await eventually(lambda: _live(b.rt) == 0, "the person's actor stopped")
        assert await b.rt.store.pending_inbox() == []


async def test_a_handoff_open_on_one_side_holds_the_linked_person(
    tmp_path: Path, database_url: str | None
) -> None:
    staff_chat = -1009876543
    async with both(
        tmp_path,
        database_url,
        CONCIERGE_STAFF_CHANNEL="telegram",
        CONCIERGE_STAFF_CHAT_ID=str(staff_chat),
    ) as b:
        await b.whatsapp_says("/humain")
        await eventually(lambda: len(b.to_whatsapp()) == 1, "the handoff opened")
        await eventually(lambda: len(b.telegram.texts_to(staff_chat)) == 1, "the staff notice")
        code = await b.code_on_telegram()

        await b.whatsapp_says(code)  # sent while the handoff is open: a link, not forwarded
        await eventually(lambda: len(b.to_whatsapp()) == 2, "linked")
        assert b.to_whatsapp()[-1] == text(Reply.LINK_DONE, channel="Telegram")
        assert all(code[:3] not in t for t in b.telegram.texts_to(staff_chat))

        b.telegram_says("Bonjour, quelqu'un peut-il me rappeler ?")
        await eventually(lambda: len(b.telegram.texts_to(staff_chat)) == 2, "the forward")
        assert "quelqu'un peut-il me rappeler" in b.telegram.texts_to(staff_chat)[-1]
        await eventually(owes_nothing(b.rt.store), "nothing owed")
        assert len(b.to_telegram()) == 2  # the code and the confirmation: staff answer now
        assert b.llm.requests == []


async def test_staff_link_two_live_conversations_and_unlink_them_through_the_api(
    tmp_path: Path, database_url: str | None
) -> None:
    async with both(tmp_path, database_url, CONCIERGE_JWT_KEYS="k1=" + "k" * 40) as b:
        b.telegram_says("Q1 : quand a lieu le catéchisme des enfants ?")
        # Telegram's user first (the poller's pace is not the webhook's): the older id, kept.
        await eventually(lambda: len(b.to_telegram()) == 1, "Q1's answer")
        await b.whatsapp_says("W1 : où se trouve le secrétariat de la paroisse ?")
        await eventually(lambda: len(b.to_telegram()) == len(b.to_whatsapp()) == 1, "answers")
        assert _live(b.rt) == 2  # both conversations are alive
        tg, wa = await b.user_id(f"telegram:{TG}"), await b.user_id(WA)
        assert tg is not None
        assert wa is not None
        token = issue_token(
            b.rt.settings.api, subject="sec", role=Role.ADMIN, ttl_s=600, now=utcnow()
        )
        auth = {"Authorization": f"Bearer {token}"}
        base = f"{b.rt.http_binds[0]}/api/v1/users"
        async with httpx.AsyncClient(timeout=30) as http:
            linked = await http.post(f"{base}/{wa}/link", json={"user_id": tg}, headers=auth)
            assert linked.status_code == 200, linked.text
            kept = linked.json()["id"]
            assert kept == min(tg, wa)  # the older person stays; which one is older is a race

            await b.whatsapp_says("W2 : et le samedi ?")
            await eventually(lambda: len(b.to_whatsapp()) == 2, "W2's answer")
            assert "Q1" in b.asked()[-1]  # one conversation now
            await eventually(lambda: _live(b.rt) == 1, "one actor for the person")

            apart = await http.post(
                f"{base}/{kept}/unlink", json={"identity": f"telegram:{TG}"}, headers=auth
            )
            assert apart.status_code == 200, apart.text
            assert [i["user_key"] for i in apart.json()["identities"]] == [f"telegram:{TG}"]
            audit = (await http.get(f"{b.rt.http_binds[0]}/api/v1/audit", headers=auth)).json()
        assert [e["action"] for e in audit["entries"][:2]] == ["user.unlink", "user.link"]
        b.telegram_says("Q3 : et le dimanche ?")
        await eventually(lambda: len(b.to_telegram()) == 2, "Q3's answer")
        assert "W2" not in b.asked()[-1]
        assert b.to_whatsapp()[-1] == ANSWER  # no link message to users on a staff link
        await eventually(owes_nothing(b.rt.store), "nothing owed")
