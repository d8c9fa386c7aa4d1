"""A person linked on one replica is one person on every replica: two daemons as real
processes on one PostgreSQL database, the Telegram and WAHA fakes, and each message of
the person's two identities delivered to the replicas alternately.

Each replica keeps its identity → person map in memory; a link, an unlink or an
erasure committed by one is announced to the others at commit (``concierge_people``).
Without that, the other replica would go on routing an identity under its own key:
two leases and two actors for one person, each with half the conversation.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from concierge.app.api import Role, issue_token
from concierge.protocol import utcnow
from concierge.settings import load_settings
from tests.app.replicas import MARKER, EchoLLM, fresh_database, metric, ready, start_replica, stop
from tests.app.test_replicas import sql
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.waha_api import FakeWaha, RetryPolicy, WahaWebhookPusher, message_event
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRET = "s3cret-token_for-the-webhook"
HMAC_KEY = "link-test-hmac-key"
JWT_KEYS = "k1=" + "k" * 40
TG = 556000111
WA_CHAT = "221770000043@c.us"
TG_KEY = f"telegram:{TG}"
WA_KEY = f"waha:{WA_CHAT}"
CODE = re.compile(r"(\d{3}) (\d{3})")


@pytest.fixture
def database() -> Iterator[str]:
    yield from fresh_database()


class Person:
    """The two replicas, and what one parishioner does through them on both channels."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        bases: list[str],
        telegram: FakeTelegram,
        waha: FakeWaha,
        llm: EchoLLM,
    ) -> None:
        self.client = client
        self.bases = bases
        self.telegram = telegram
        self.waha = waha
        self.llm = llm
        self.pushers = [
            WahaWebhookPusher.over_http(
                client,
                f"{base}/webhooks/waha",
                hmac_key=HMAC_KEY,
                policy=RetryPolicy(attempts=5, time_scale=0.1),
            )
            for base in bases
        ]

    async def on_telegram(self, replica: int, text: str) -> None:
        update = self.telegram.text_message(user_id=TG, text=text)
        response = await self.client.post(
            f"{self.bases[replica]}/webhooks/telegram",
            content=json.dumps(update),
            headers={
                "content-type": "application/json",
                "x-telegram-bot-api-secret-token": SECRET,
            },
        )
        assert response.status_code == 200, response.text

    async def on_whatsapp(self, replica: int, text: str) -> None:
        delivery = await self.pushers[replica].deliver(message_event(chat_id=WA_CHAT, text=text))
        assert delivery.delivered, delivery.statuses

    def to_telegram(self) -> list[str]:
        return self.telegram.texts_to(TG)

    def to_whatsapp(self) -> list[str]:
        return [
            r.json["text"]
            for r in self.waha.requests_to("sendText")
            if isinstance(r.json, dict) and r.json.get("chatId") == WA_CHAT
        ]

    def answered(self) -> list[str]:
        """The markers answered on both channels."""
        return [m for t in (*self.to_telegram(), *self.to_whatsapp()) for m in MARKER.findall(t)]

    def request_for(self, marker: str) -> str:
        """Every message the provider was sent for ``marker``'s turn, as one string."""
        found = [
            json.dumps(r.json.get("messages", []), ensure_ascii=False)
            for r in self.llm.requests
            if isinstance(r.json, dict) and EchoLLM.marker(r) == marker
        ]
        assert len(found) == 1, f"{marker} was asked {len(found)} times"
        return found[0]

    async def live_actors(self) -> float:
        return sum(
            [await metric(self.client, b, "concierge_conversations_live") for b in self.bases]
        )


async def held_leases(dsn: str) -> int:
    return int(
        str(await sql(dsn, "SELECT count(*) FROM conversation_leases WHERE expires_at > now()"))
    )


async def user_of(dsn: str, user_key: str) -> int:
    found = await sql(dsn, "SELECT user_id FROM identities WHERE user_key = $1", user_key)
    assert isinstance(found, int), f"{user_key} has no person"
    return found


async def test_a_link_and_an_unlink_on_one_replica_hold_on_every_replica(
    tmp_path: Path, database: str
) -> None:
    telegram = FakeTelegram()
    async with (
        telegram.serve(),
        FakeWaha.serve(api_key="waha-key") as waha,
        EchoLLM.serve(max_delay_s=0.3) as llm,
    ):
        processes = [
            start_replica(
                tmp_path,
                name,
                dsn=database,
                llm_url=llm.url,
                telegram_url=telegram.url,
                token=telegram.token,
                TELEGRAM_MODE="webhook",
                TELEGRAM_WEBHOOK_URL="https://concierge.example.org/webhooks/telegram",
                TELEGRAM_WEBHOOK_SECRET=SECRET,
                WAHA_URL=waha.url,
                WAHA_API_KEY="waha-key",
                WAHA_WEBHOOK_HMAC_KEY=HMAC_KEY,
                WAHA_TYPING_MAX_S="0",
                CONCIERGE_JWT_KEYS=JWT_KEYS,
                CONCIERGE_LEASE_TTL_S="30",
            )
            for name in ("replica-a", "replica-b")
        ]
        bases = [base for _, base in processes]
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                for process, base in processes:
                    await eventually(
                        lambda p=process, b=base: ready(client, b, p), "both replicas ready"
                    )
                p = Person(client, bases, telegram, waha, llm)
                # Both identities talk to replica B first: B runs an actor for each.
                await p.on_telegram(1, "Question m-00-00 : les horaires des confessions ?")
                await p.on_whatsapp(1, "Question m-00-01 : où est le secrétariat ?")
                await eventually(lambda: len(p.answered()) == 2, "both first answers")
                assert await p.live_actors() == 2

                # The code is asked for and given on replica A.
                await p.on_telegram(0, "/lier")
                await eventually(lambda: len(p.to_telegram()) == 2, "the link code")
                found = CODE.search(p.to_telegram()[-1])
                assert found is not None, p.to_telegram()[-1]
                code = found.group(1) + found.group(2)
                await p.on_whatsapp(0, f"{code[:3]} {code[3:]}")
                await eventually(
                    lambda: len(p.to_whatsapp()) == 2 and len(p.to_telegram()) == 3,
                    "both confirmations",
                )
                assert await user_of(database, TG_KEY) == await user_of(database, WA_KEY)

                async def one_actor() -> bool:
                    return await p.live_actors() == 1

                async def one_at_most() -> bool:
                    return await p.live_actors() <= 1

                # The actors of the old keys, here and there, retire (the next message starts
                # the person's).
                await eventually(one_at_most, "no actor of an old key left on either replica")
                # Two persons until now (their first turns ran side by side): one from here on.
                llm.overlaps = 0
                llm.overlapping.clear()
                assert await held_leases(database) <= 1

                # Alternately on both channels and both replicas, without waiting for answers.
                linked = ["m-00-02", "m-00-03", "m-00-04", "m-00-05", "m-00-06", "m-00-07"]
                for n, marker in enumerate(linked):
                    replica = (n + n // 2) % 2  # A, B, B, A, A, B
                    if n % 2 == 0:
                        await p.on_telegram(replica, f"Et {marker} : le samedi ?")
                    else:
                        await p.on_whatsapp(replica, f"Puis {marker} : le dimanche ?")
                    # An actor started where the lease is held elsewhere ends at once: the
                    # leases say where the person's turns run.
                    assert await held_leases(database) <= 1
                await eventually(lambda: len(p.answered()) == 2 + len(linked), "every answer")
                await eventually(one_actor, "one actor for the person on both replicas")
                assert await held_leases(database) == 1
                # One conversation: each turn's request carries the turn before it, from the
                # other channel and the other replica.
                for before, marker in itertools.pairwise(linked):
                    assert before in p.request_for(marker), (before, marker)

                # Unlinked by staff on replica A: the next turns are two persons' again.
                token = issue_token(
                    load_settings({"CONCIERGE_JWT_KEYS": JWT_KEYS}).api,
                    subject="sec",
                    role=Role.ADMIN,
                    ttl_s=600,
                    now=utcnow(),
                )
                person = await user_of(database, TG_KEY)
                apart = await client.post(
                    f"{bases[0]}/api/v1/users/{person}/unlink",
                    json={"identity": WA_KEY},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert apart.status_code == 200, apart.text
                await p.on_telegram(1, "Encore m-00-08 : la messe ?")
                await eventually(lambda: "m-00-08" in p.answered(), "m-00-08's answer")
                await p.on_whatsapp(1, "Enfin m-00-09 : le baptême ?")
                await eventually(lambda: "m-00-09" in p.answered(), "m-00-09's answer")
                assert "m-00-08" not in p.request_for("m-00-09")
                assert "m-00-07" in p.request_for("m-00-08")  # Telegram keeps the history

                async def an_actor_each() -> bool:
                    return await p.live_actors() <= 2

                await eventually(an_actor_each, "an actor per person at most")

                # Linked by staff on one replica while the other runs a slow Telegram turn: the
                # person's next turn, on the first, waits for it (one turn at a time) and
                # carries it.
                llm.slow["m-00-10"] = 3.0
                await p.on_telegram(0, "Puis m-00-10 : la chorale ?")
                await eventually(
                    lambda: "m-00-10" in llm.in_flight_markers, "the slow Telegram turn"
                )
                holder = await sql(
                    database,
                    "SELECT holder FROM conversation_leases "
                    "WHERE user_key = $1 AND expires_at > now()",
                    TG_KEY,
                )
                elsewhere = 0 if holder == "replica-b" else 1
                tg, wa = await user_of(database, TG_KEY), await user_of(database, WA_KEY)
                linked_by_staff = await client.post(
                    f"{bases[elsewhere]}/api/v1/users/{wa}/link",
                    json={"user_id": tg},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert linked_by_staff.status_code == 200, linked_by_staff.text
                assert "m-00-10" in llm.in_flight_markers  # still running over there
                await p.on_whatsapp(elsewhere, "Et m-00-11 : les fiançailles ?")
                await eventually(lambda: "m-00-11" in p.answered(), "m-00-11's answer")
                assert "m-00-10" in p.request_for("m-00-11")
        finally:
            for process, _ in processes:
                stop(process)

    telegram_order = [m for t in p.to_telegram() for m in MARKER.findall(t)]
    whatsapp_order = [m for t in p.to_whatsapp() for m in MARKER.findall(t)]
    asked = Counter(EchoLLM.marker(r) for r in llm.requests if r.endpoint == llm.main_endpoint)
    print(
        f"\npeople over replicas: telegram {telegram_order}, whatsapp {whatsapp_order}, "
        f"duplicate LLM calls {sum(c - 1 for c in asked.values() if c > 1)}, "
        f"turns of the person at once {llm.overlaps}"
    )
    assert telegram_order == ["m-00-00", "m-00-02", "m-00-04", "m-00-06", "m-00-08", "m-00-10"]
    assert whatsapp_order == ["m-00-01", "m-00-03", "m-00-05", "m-00-07", "m-00-09", "m-00-11"]
    assert llm.overlaps == 0, llm.overlapping  # never two turns of the person at once
    assert all(c == 1 for c in asked.values()), asked
