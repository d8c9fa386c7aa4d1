"""The staff chat: notices that say who asked and what they said, answers and closes from it.

The conversations subtree runs for real (router, conversation actors, staff desk) on
SQLite; staff messages enter as ingest commits them, with the ``STAFF`` kind the
Telegram parser gives messages of the staff chat.
"""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import RouterStats, run_router
from concierge.domain import Reply as R
from concierge.protocol import (
    Channel,
    Inbound,
    InboundKind,
    InboundMessage,
    OutboxRow,
    ServiceType,
    utcnow,
)
from concierge.store import open_store
from tests import shipped
from tests.actors.harness import Harness, running_concierge
from tests.providers.scripted import Reply, ScriptedAdapter
from tests.shipped import reply_text
from tests.stores import store_settings
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

STAFF_CHAT = "-1001234"
STAFF: dict[str, Any] = {"staff_channel": Channel.TELEGRAM, "staff_chat_id": STAFF_CHAT}
BOB = "Bob (telegram:42)"
_updates = itertools.count(1)


def echo() -> ScriptedAdapter:
    return ScriptedAdapter("scripted", default=lambda call, key: Reply(text=f"echo: {call.query}"))


async def from_staff(h: Harness, text: str, *, reply_to: str | None = None) -> Inbound:
    """A message of the staff chat, committed and routed as ingest does."""
    message = InboundMessage(
        correlation_id=f"staff-{next(_updates)}",
        channel=Channel.TELEGRAM,
        user_key="staff:telegram:42",
        chat_id=STAFF_CHAT,
        external_id=f"staff-update-{next(_updates)}",
        text=text,
        kind=InboundKind.STAFF,
        received_at=utcnow(),
        display_name="Bob",
        reply_to=reply_to,
    )
    accepted = await h.store.accept(message)
    inbound = Inbound.committed(message, inbox_id=accepted.inbox_id)
    await h.router_send.send(inbound)
    return inbound


async def staff_chat(h: Harness) -> list[OutboxRow]:
    return [r for r in await h.outbox(Channel.TELEGRAM) if r.chat_id == STAFF_CHAT]


async def settled(h: Harness, row: Inbound) -> None:
    async def done() -> bool:
        return all(p.inbox_id != row.inbox_id for p in await h.store.pending_inbox())

    await eventually(done, f"staff message {row.inbox_id} to be settled", timeout_s=20)


async def open_handoff(h: Harness) -> int:
    await h.ask("A quelle heure est la messe dimanche ?")
    await h.ask("/humain")
    (notice,) = await staff_chat(h)
    assert notice.handoff_id is not None
    return notice.handoff_id


async def test_the_notice_names_the_user_and_channel_and_quotes_the_last_messages(
    tmp_path: Path,
) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        handoff_id = await open_handoff(h)
        (notice,) = await staff_chat(h)
        lines = notice.text.splitlines()
        assert lines[0].startswith(f"Demande de contact n°{handoff_id} (command) de User u1")
        assert "sur console" in lines[0]
        assert "› User u1 : A quelle heure est la messe dimanche ?" in lines
        assert "› Assistant : echo: A quelle heure est la messe dimanche ?" in lines
        assert "› User u1 : /humain" in lines
        assert f"/r {handoff_id}" in lines[-1]
        assert f"/close {handoff_id}" in lines[-1]


async def test_what_the_user_writes_during_a_handoff_is_forwarded_to_the_staff_chat(
    tmp_path: Path,
) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], **STAFF) as h:
        handoff_id = await open_handoff(h)
        silent = await h.ask("Vous êtes là ?")
        assert silent.reply == ""
        _notice, forwarded = await staff_chat(h)
        assert forwarded.text == f"n°{handoff_id} · User u1 : Vous êtes là ?"
        assert forwarded.handoff_id == handoff_id
        assert len(adapter.calls) == 1  # only the question before the handoff


async def test_r_answers_the_user_as_the_parish_and_claims_the_handoff(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        handoff_id = await open_handoff(h)
        row = await from_staff(h, f"/r {handoff_id} Bonjour, ici le père Jean.")
        await settled(h, row)
        replies = await h.replies_to("u1")
        assert replies[-1] == reply_text(R.STAFF_REPLY, "fr", text="Bonjour, ici le père Jean.")
        view = await h.store.handoff_view(handoff_id)
        assert view is not None
        assert view.claimed_by == BOB
        (audit,) = await h.store.audit_entries(limit=10)
        assert (audit.actor, audit.action, audit.target, audit.via) == (
            BOB,
            "handoff.reply",
            f"handoff:{handoff_id}",
            "staff_chat",
        )
        history = await h.store.history(view.conversation_id, limit=1)
        assert (history[0].author, history[0].text) == (BOB, "Bonjour, ici le père Jean.")


async def test_replying_to_the_notice_answers_its_handoff(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        handoff_id = await open_handoff(h)
        (notice,) = await staff_chat(h)
        await h.store.mark_sent(notice.outbox_id, message_ids=("7001",))
        row = await from_staff(h, "Je vous rappelle dans l'heure.", reply_to="7001")
        await settled(h, row)
        assert (await h.replies_to("u1"))[-1] == reply_text(
            R.STAFF_REPLY, "fr", text="Je vous rappelle dans l'heure."
        )
        closing = await from_staff(h, "/close", reply_to="7001")
        await settled(h, closing)
        view = await h.store.handoff_view(handoff_id)
        assert view is not None
        assert not view.active


async def test_close_ends_the_handoff_tells_both_sides_and_the_concierge_answers_again(
    tmp_path: Path,
) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], **STAFF) as h:
        handoff_id = await open_handoff(h)
        row = await from_staff(h, f"/close@parish_bot {handoff_id}")
        await settled(h, row)
        assert (await h.replies_to("u1"))[-1] == reply_text(R.HANDOFF_CLOSED, "fr")
        assert (await staff_chat(h))[-1].text == reply_text(
            R.STAFF_CLOSED, "fr", handoff_id=handoff_id, by=BOB
        )
        answered = await h.ask("Et la messe de semaine ?")
        assert answered.provider == "scripted"
        assert answered.service_type is ServiceType.RENSEIGNEMENT


async def test_staff_mistakes_are_answered_in_the_staff_chat(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        handoff_id = await open_handoff(h)
        for text, expected in (
            ("/r 999 Bonjour", reply_text(R.STAFF_NO_HANDOFF, "fr", handoff_id=999)),
            (f"/r {handoff_id}", reply_text(R.STAFF_NO_TEXT, "fr", handoff_id=handoff_id)),
            ("/aide", reply_text(R.STAFF_HELP, "fr")),
            ("/r Bonjour", reply_text(R.STAFF_HELP, "fr")),  # no number, no notice replied to
        ):
            row = await from_staff(h, text)
            await settled(h, row)
            assert (await staff_chat(h))[-1].text == expected
        before = len(await staff_chat(h))
        row = await from_staff(h, "/sondage demain ?")  # for another bot: left alone
        await settled(h, row)
        assert len(await staff_chat(h)) == before
        await from_staff(h, f"/close {handoff_id}")
        late = await from_staff(h, f"/r {handoff_id} Encore là ?")
        await settled(h, late)
        assert (await staff_chat(h))[-1].text == reply_text(
            R.STAFF_NOT_ACTIVE, "fr", handoff_id=handoff_id
        )


async def test_a_staff_message_handled_twice_sends_its_answer_once(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        handoff_id = await open_handoff(h)
        row = await from_staff(h, f"/r {handoff_id} Une seule fois")
        await h.router_send.send(row)  # the replayer found it before it was settled
        await settled(h, row)
        marker = await from_staff(h, "/aide")  # handled after both copies of the first
        await settled(h, marker)
        staff_answers = [r for r in await h.replies_to("u1") if "Une seule fois" in r]
        assert len(staff_answers) == 1


async def test_once_closed_the_concierge_knows_what_staff_said(tmp_path: Path) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], **STAFF) as h:
        handoff_id = await open_handoff(h)
        row = await from_staff(h, f"/r {handoff_id} La messe de dimanche est à 11h cette semaine.")
        await settled(h, row)
        closing = await from_staff(h, f"/close {handoff_id}")
        await settled(h, closing)
        await h.ask("Et en semaine ?")
        call, _ = adapter.calls[-1]
        said = [t.text for t in call.turns]
        assert "La messe de dimanche est à 11h cette semaine." in said
        assert "Et en semaine ?" in said[-1]


class NoConversations:
    """The router's conversations, never asked for here: only staff messages pass."""

    def __contains__(self, key: object) -> bool:
        return False

    def get(self, key: str) -> None:
        return None

    def start_child_soon(self, key: str, *args: Any) -> None:
        raise AssertionError("a staff message started a conversation")


async def test_a_staff_message_the_desk_cannot_take_now_stays_pending_for_the_replayer(
    tmp_path: Path,
) -> None:
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        desk_send, desk_receive = trio.open_memory_channel[Inbound](1)  # nobody reads it
        router_send, router_receive = trio.open_memory_channel[Inbound](10)
        stats = RouterStats()
        rows = []
        for n in range(2):
            message = InboundMessage(
                correlation_id=f"c{n}",
                channel=Channel.TELEGRAM,
                user_key="staff:telegram:42",
                chat_id=STAFF_CHAT,
                external_id=f"u{n}",
                text=f"/r 1 n°{n}",
                kind=InboundKind.STAFF,
                received_at=utcnow(),
            )
            accepted = await store.accept(message)
            rows.append(Inbound.committed(message, inbox_id=accepted.inbox_id))
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    run_router,
                    inbox=router_receive,
                    conversations=NoConversations(),
                    store=store,
                    outbox_nudges={},
                    languages=shipped.languages(),
                    stats=stats,
                    staff_desk=desk_send,
                )
            )
            for row in rows:
                await router_send.send(row)
            await eventually(
                lambda: stats.staff_routed + stats.staff_deferred == 2, "both rows routed"
            )
            assert (stats.staff_routed, stats.staff_deferred) == (1, 1)
            assert desk_receive.receive_nowait() == rows[0]
            assert [p.inbox_id for p in await store.pending_inbox()] == [r.inbox_id for r in rows]
            nursery.cancel_scope.cancel()
