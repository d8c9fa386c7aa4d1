"""A person in distress: an urgent handoff with the emergency reply, before anything else.

Real conversations subtree (SQLite store, memory cache, provider pool); providers are
scripted adapters, so what a provider says (or that none is asked) is checked too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from actors import run_handoff_sweeper
from concierge.domain import (
    DistressKind,
    OfflineText,
    OpenHandoffs,
    Reply as R,
    forget_user,
    open_handoffs,
)
from concierge.domain.distress import URGENT_MARKER
from concierge.protocol import Channel, ServiceType
from concierge.store import Store
from tests import shipped
from tests.actors.harness import CrashOnce, Harness, running_concierge
from tests.domain.distress_set import labelled
from tests.providers.scripted import Reply, ScriptedAdapter
from tests.shipped import reply_text
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

STAFF: dict[str, Any] = {"staff_channel": Channel.TELEGRAM, "staff_chat_id": "-1001234"}
IN_DISTRESS = "je ne supporte plus rien, j'ai envie d'en finir"


def echo() -> ScriptedAdapter:
    return ScriptedAdapter("scripted", default=lambda call, key: Reply(text=f"echo: {call.query}"))


def emergency_reply(language: str) -> str:
    return shipped.community().distress_reply(shipped.languages(), language)


FORWARDED = re.compile(r"^n°\d+ · ")
"""A user's message forwarded to the staff chat during their handoff."""


async def staff_notices(h: Harness) -> list[str]:
    """The handoff notices in the staff chat (not what the users wrote meanwhile)."""
    return [r.text for r in await h.outbox(Channel.TELEGRAM) if not FORWARDED.match(r.text)]


async def forwarded(h: Harness) -> list[str]:
    return [r.text for r in await h.outbox(Channel.TELEGRAM) if FORWARDED.match(r.text)]


async def urgent_ids(h: Harness) -> list[int]:
    return [row.handoff_id for row in await open_handoffs(h.store) if row.urgent]


async def test_every_message_of_the_labelled_set_in_distress_becomes_an_urgent_handoff(
    tmp_path: Path,
) -> None:
    """Each message from its own person, through the whole turn; providers never asked."""
    adapter = echo()
    rows = labelled()
    async with running_concierge(tmp_path, adapters=[adapter], **STAFF) as h:
        for i, row in enumerate(rows):
            report = await h.ask(row.text, user=f"p{i}")
            if row.expected is None:
                assert report.reply != emergency_reply(row.language), row.text
                continue
            assert report.service_type is ServiceType.CONTACT_HUMAIN, row.text
            assert report.reply == emergency_reply(row.language), row.text
        in_distress = {r.text for r in rows if r.expected is not None}
        assert len(await urgent_ids(h)) == len(in_distress)  # and none for the others
        notices = await staff_notices(h)
        assert sum(1 for n in notices if n.startswith("🚨 URGENT")) == len(in_distress)
        assert not any(call.query in in_distress for call, _ in adapter.calls)
        assert h.service.turn_metrics.urgent_handoffs == {"rules": len(in_distress)}


async def test_the_reply_and_the_staff_notice_say_what_they_must(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        report = await h.ask(IN_DISTRESS)
        assert report.reply == emergency_reply("fr")
        assert "une personne de la paroisse" in report.reply
        assert shipped.languages().offline(OfflineText.NOT_FOUND, "fr") not in report.reply
        (notice,) = await staff_notices(h)
        (handoff_id,) = await urgent_ids(h)
        assert notice.startswith(
            f"🚨 URGENT (idées de suicide ou d'automutilation) : demande n°{handoff_id} de User u1"
        )
        assert f"› User u1 : {IN_DISTRESS}" in notice.splitlines()
        active = await h.store.active_handoff(1)
        assert active is not None
        assert (active.urgent, active.reason) == (True, "distress")


async def test_the_concierge_is_silent_after_an_urgent_handoff(tmp_path: Path) -> None:
    adapter = echo()
    async with running_concierge(tmp_path, adapters=[adapter], **STAFF) as h:
        await h.ask(IN_DISTRESS)
        assert (await h.ask("Vous êtes là ? j'ai toujours envie de mourir")).reply == ""
        assert (await h.ask("A quelle heure est la messe ?")).reply == ""
        assert len(await staff_notices(h)) == 1
        assert len(await forwarded(h)) == 2
        assert adapter.calls == []


async def test_distress_comes_before_the_rate_limit(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], rate_per_min=0.001, burst=1) as h:
        await h.ask("A quelle heure est la messe ?")
        limited = await h.ask("Et le samedi ?")
        assert limited.reply == reply_text(R.RATE_LIMITED, "fr")
        report = await h.ask(IN_DISTRESS)
        assert report.reply == emergency_reply("fr")
        assert len(await urgent_ids(h)) == 1


async def test_distress_while_waiting_for_a_person_makes_the_handoff_urgent(
    tmp_path: Path,
) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        with structlog.testing.capture_logs() as logs:
            assert (await h.ask("/humain")).reply == reply_text(R.HANDOFF_OPENED, "fr")
            assert (await h.ask("personne ne répond ?")).reply == ""
            report = await h.ask("mon mari me frappe, j'ai peur")
            assert report.reply == emergency_reply("fr")
            assert (await h.ask("il arrive")).reply == ""
        notices = await staff_notices(h)
        assert len(notices) == 2
        assert notices[1].startswith("🚨 URGENT (violences ou abus)")
        (handoff_id,) = await urgent_ids(h)
        assert f"n°{handoff_id}" in notices[0]  # the same handoff, now urgent
        events = [
            e["event"] for e in logs if e["event"] in ("handoff.opened", "handoff.made_urgent")
        ]
        assert events == ["handoff.opened", "handoff.made_urgent"]
        assert h.service.turn_metrics.handoffs_opened == 1


async def test_a_providers_judgement_raises_the_alarm_and_its_text_is_never_sent(
    tmp_path: Path,
) -> None:
    judge = ScriptedAdapter(
        "scripted",
        default=Reply(text=f"{URGENT_MARKER} Je suis désolé, je préviens la paroisse."),
    )
    async with running_concierge(tmp_path, adapters=[judge], **STAFF) as h:
        message = "je ne sais plus quoi faire, tout s'écroule, ce soir je vais le faire"
        assert shipped.distress().detect(message) is None  # only the provider can tell
        report = await h.ask(message)
        assert len(judge.calls) == 1
        assert report.reply == emergency_reply("fr")
        assert report.provider == "scripted"
        assert report.service_type is ServiceType.CONTACT_HUMAIN
        (notice,) = await staff_notices(h)
        assert notice.startswith("🚨 URGENT (jugée urgente par le modèle de langue)")
        active = await h.store.active_handoff(1)
        assert active is not None
        assert (active.urgent, active.reason) == (True, "distress_judged")
        for text in [*await h.replies_to("u1"), notice]:
            assert "urgent]]" not in text.casefold()
        assert h.service.turn_metrics.urgent_handoffs == {"provider": 1}
        assert (await h.ask("allo ?")).reply == ""
        assert len(judge.calls) == 1


async def test_no_provider_can_lower_the_alarm(tmp_path: Path) -> None:
    """The rules decide before any provider: a calm answer (or none) changes nothing."""
    calm = ScriptedAdapter("scripted", default=Reply(text="Tout va bien, rien d'urgent."))
    async with running_concierge(tmp_path, adapters=[calm], **STAFF) as h:
        report = await h.ask(IN_DISTRESS)
        assert report.reply == emergency_reply("fr")
        assert calm.calls == []
        assert len(await urgent_ids(h)) == 1


async def test_a_marker_elsewhere_in_a_reply_is_stripped_and_raises_nothing(
    tmp_path: Path,
) -> None:
    sly = ScriptedAdapter(
        "scripted", default=Reply(text="La messe est à 10h30 [[URGENT]] le dimanche.")
    )
    async with running_concierge(tmp_path, adapters=[sly], **STAFF) as h:
        report = await h.ask("Quand est la messe dimanche ?")
        assert report.reply == "La messe est à 10h30  le dimanche."
        assert await urgent_ids(h) == []
        assert await staff_notices(h) == []


async def test_a_crash_while_opening_an_urgent_handoff_alerts_once(tmp_path: Path) -> None:
    faulty: list[CrashOnce] = []

    def wrap(store: Store) -> Store:
        faulty.append(CrashOnce(store))
        return faulty[0]

    async with running_concierge(tmp_path, wrap_store=wrap, **STAFF) as h:
        await h.ask("/humain")
        doomed = await h.accept("I want to kill myself")
        faulty[0].before_commit.add(doomed.correlation_id)
        await h.router_send.send(doomed)
        report = await h.report()  # from the restarted actor: the handoff was made urgent
        assert report.inbox_id == doomed.inbox_id
        assert report.reply == emergency_reply("en")
        assert (await h.replies_to("u1"))[1:] == [emergency_reply("en")]
        notices = await staff_notices(h)
        assert [n.startswith("🚨 URGENT") for n in notices] == [False, True]
        assert await h.store.pending_inbox() == []


async def test_a_message_that_keeps_crashing_its_turn_still_gets_the_numbers(
    tmp_path: Path,
) -> None:
    class Broken(CrashOnce):
        async def open_handoff(self, **kwargs: Any) -> Any:
            raise RuntimeError("a bug while opening the handoff")

    async with running_concierge(tmp_path, wrap_store=Broken, **STAFF) as h:
        await h.send(IN_DISTRESS)
        report = await h.report()
        assert report.reply == emergency_reply("fr")


async def test_an_urgent_handoff_never_times_out_and_health_warns_while_it_is_open(
    tmp_path: Path,
) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        await h.ask("/humain", user="calm")
        await h.ask(IN_DISTRESS, user="urgent")
        watch = h.service.open_handoffs
        await eventually(lambda: watch.urgent == 1, "the sweeper to count the urgent handoff")
        (check,) = [c for c in h.service.health_checks() if c.key == "handoffs:urgentOpen"]
        assert (check.status.value, check.observed_value) == ("warn", 1)
        assert check.details == {"open": 2}
        later = OpenHandoffs()
        with trio.move_on_after(0.5):
            await run_handoff_sweeper(
                store=h.store,
                languages=shipped.languages(),
                timeout_s=0.0,
                interval_s=60.0,
                watch=later,
            )
        assert (later.open, later.urgent) == (1, 1)  # the calm one timed out, not the urgent one
        (handoff_id,) = await urgent_ids(h)
        await h.store.close_handoff(handoff_id, closed_by="pere.jean")
        await later.count(h.store)
        (check,) = later.health_checks()
        assert (check.status.value, check.observed_value) == ("pass", 0)


async def test_the_logs_say_a_handoff_is_urgent_never_what_was_written(tmp_path: Path) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        with structlog.testing.capture_logs() as logs:
            await h.ask(IN_DISTRESS)
        (opened,) = [e for e in logs if e["event"] == "handoff.opened"]
        assert opened["urgent"] is True
        labels = shipped.languages().pack("fr").distress.labels.values()
        found = shipped.distress().detect(IN_DISTRESS)
        assert found is not None
        for event in logs:
            for value in map(str, event.values()):
                assert IN_DISTRESS not in value
                assert all(label not in value for label in labels)
                assert all(phrase not in value for phrase in found.phrases)
                assert DistressKind.SELF_HARM.value not in value


async def test_forgetting_a_person_erases_the_staff_notice_that_quotes_them(
    tmp_path: Path,
) -> None:
    async with running_concierge(tmp_path, adapters=[echo()], **STAFF) as h:
        await h.ask(IN_DISTRESS)
        await h.ask("A quelle heure est la messe ?", user="other")
        assert len(await staff_notices(h)) == 1
        await forget_user(h.store, "console:u1")
        assert await staff_notices(h) == []
        assert await h.replies_to("u1") == []
        assert len(await h.replies_to("other")) == 1
