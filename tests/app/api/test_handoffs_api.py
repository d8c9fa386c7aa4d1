"""Staff through the API: list handoffs, read one, claim, reply to the user, close; all audited."""

from __future__ import annotations

import pytest

from concierge.domain import Reply as R
from concierge.protocol import Channel
from tests.app.api.conftest import ADMIN, STAFF, Api, bearer, mint, seed_handoff
from tests.shipped import reply_text

pytestmark = pytest.mark.anyio

BOB = bearer(mint(sub="bob"))


async def test_staff_see_active_handoffs_and_one_with_its_conversation(api: Api) -> None:
    first = await api.handoff("111", name="Marie")
    second = await api.handoff("222", name="Paul")
    listed = await api.client.get("/api/v1/handoffs", headers=STAFF)
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == "no-store"
    assert listed.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    handoffs = (await listed.get_json())["handoffs"]
    assert [(h["id"], h["display_name"], h["channel"], h["state"]) for h in handoffs] == [
        (first, "Marie", "telegram", "open"),
        (second, "Paul", "telegram", "open"),
    ]
    assert handoffs[0]["urgent"] is False
    detail = await (await api.client.get(f"/api/v1/handoffs/{first}", headers=STAFF)).get_json()
    assert detail["handoff"]["user_key"] == "telegram:111"
    assert [(m["sender"], m["text"]) for m in detail["messages"]] == [
        ("user", "Je voudrais parler à quelqu'un"),
        ("concierge", "Je transmets votre demande."),
    ]
    closed = await api.client.get("/api/v1/handoffs?state=closed", headers=STAFF)
    assert (await closed.get_json())["handoffs"] == []


async def test_a_reply_goes_to_the_users_channel_through_the_outbox_and_claims(api: Api) -> None:
    handoff_id = await api.handoff()
    response = await api.client.post(
        f"/api/v1/handoffs/{handoff_id}/reply", headers=STAFF, json={"text": "  Bonjour Marie !  "}
    )
    assert response.status_code == 202
    assert (await response.get_json())["claimed_by"] == "alice"
    (row,) = await api.store.pending_outbox(Channel.TELEGRAM)
    assert (row.chat_id, row.user_key) == ("111", "telegram:111")
    assert row.text == reply_text(R.STAFF_REPLY, "fr", text="Bonjour Marie !")
    nudge = api.nudges.receive_nowait()
    assert nudge.channel is Channel.TELEGRAM
    detail = await (
        await api.client.get(f"/api/v1/handoffs/{handoff_id}", headers=STAFF)
    ).get_json()
    assert detail["messages"][-1] == {
        **detail["messages"][-1],
        "sender": "staff",
        "author": "alice",
        "text": "Bonjour Marie !",
    }
    (entry,) = await api.store.audit_entries(limit=5)
    assert (entry.actor, entry.role, entry.action, entry.target, entry.via, entry.detail) == (
        "alice",
        "staff",
        "handoff.reply",
        f"handoff:{handoff_id}",
        "api",
        "15 characters",
    )


async def test_claims_conflict_unless_taken_over(api: Api) -> None:
    handoff_id = await api.handoff()
    claimed = await api.client.post(f"/api/v1/handoffs/{handoff_id}/claim", headers=STAFF)
    assert (await claimed.get_json())["claimed_by"] == "alice"
    again = await api.client.post(f"/api/v1/handoffs/{handoff_id}/claim", headers=STAFF)
    assert again.status_code == 200
    taken = await api.client.post(f"/api/v1/handoffs/{handoff_id}/claim", headers=BOB)
    assert taken.status_code == 409
    assert taken.headers["Content-Type"] == "application/problem+json"
    assert "claimed by alice" in (await taken.get_json())["detail"]
    over = await api.client.post(f"/api/v1/handoffs/{handoff_id}/claim?take_over=true", headers=BOB)
    assert (await over.get_json())["claimed_by"] == "bob"
    actions = [(e.actor, e.action) for e in await api.store.audit_entries(limit=5)]
    assert actions == [("bob", "handoff.take_over"), ("alice", "handoff.claim")]


async def test_closing_tells_the_user_and_the_staff_chat_and_ends_replies(api: Api) -> None:
    handoff_id = await api.handoff()
    closed = await api.client.post(f"/api/v1/handoffs/{handoff_id}/close", headers=STAFF)
    assert closed.status_code == 200
    body = await closed.get_json()
    assert (body["state"], body["closed_by"]) == ("closed", "alice")
    texts = {row.chat_id: row.text for row in await api.store.pending_outbox(Channel.TELEGRAM)}
    assert texts["111"] == reply_text(R.HANDOFF_CLOSED, "fr")
    assert texts["-1001234"] == reply_text(R.STAFF_CLOSED, "fr", handoff_id=handoff_id, by="alice")
    for path, payload in (("close", None), ("reply", {"text": "Encore ?"}), ("claim", None)):
        late = await api.client.post(
            f"/api/v1/handoffs/{handoff_id}/{path}", headers=STAFF, json=payload
        )
        assert late.status_code == 409, path
        assert "not active" in (await late.get_json())["detail"]
    listed = await api.client.get("/api/v1/handoffs?state=closed", headers=STAFF)
    assert [h["id"] for h in (await listed.get_json())["handoffs"]] == [handoff_id]


async def test_the_conversation_pages_back(api: Api) -> None:
    handoff_id = await api.handoff()
    for n in range(3):
        await api.client.post(
            f"/api/v1/handoffs/{handoff_id}/reply", headers=STAFF, json={"text": f"r{n}"}
        )
    page = await (
        await api.client.get(f"/api/v1/handoffs/{handoff_id}/messages?limit=2", headers=STAFF)
    ).get_json()
    assert [m["text"] for m in page["messages"]] == ["r1", "r2"]
    older = await (
        await api.client.get(
            f"/api/v1/handoffs/{handoff_id}/messages?limit=2&before={page['next_before']}",
            headers=STAFF,
        )
    ).get_json()
    assert [m["text"] for m in older["messages"]] == ["Je transmets votre demande.", "r0"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "detail"),
    [
        ("get", "/api/v1/handoffs/999", None, 404, "there is no handoff 999"),
        ("post", "/api/v1/handoffs/999/close", None, 404, "there is no handoff 999"),
        ("get", "/api/v1/handoffs?state=lost", None, 400, "state"),
        ("get", "/api/v1/handoffs?limit=0", None, 400, "limit"),
        ("post", "/api/v1/handoffs/1/reply", {"text": " \n "}, 400, "text: must not be blank"),
        ("post", "/api/v1/handoffs/1/reply", {"text": "x" * 4001}, 400, "text"),
        ("post", "/api/v1/handoffs/1/reply", {"txt": "oui"}, 400, "text"),
        ("get", "/api/v1/nothing-here", None, 404, "no such route"),
        ("delete", "/api/v1/handoffs", None, 405, "method not allowed"),
    ],
)
async def test_errors_are_problem_documents_that_say_what_was_wrong(
    api: Api, method: str, path: str, payload: object, status: int, detail: str
) -> None:
    await api.handoff()
    response = await getattr(api.client, method)(path, headers=STAFF, json=payload)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.get_json()
    assert body["status"] == status
    assert detail in body["detail"]


async def test_a_reply_that_is_not_json_is_refused(api: Api) -> None:
    handoff_id = await api.handoff()
    response = await api.client.post(
        f"/api/v1/handoffs/{handoff_id}/reply", headers=STAFF, data="text=Bonjour"
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert await api.store.pending_outbox(Channel.TELEGRAM) == []


async def test_admins_look_users_up_read_their_history_and_erase_them(api: Api) -> None:
    handoff_id = await api.handoff("111", name="Marie")
    found = await api.client.get("/api/v1/users?identity=telegram:111", headers=ADMIN)
    user = await found.get_json()
    assert (user["display_name"], user["active_handoff_id"]) == ("Marie", handoff_id)
    assert [i["user_key"] for i in user["identities"]] == ["telegram:111"]
    history = await api.client.get(f"/api/v1/users/{user['id']}/messages", headers=ADMIN)
    assert len((await history.get_json())["messages"]) == 2
    assert (
        await api.client.get("/api/v1/users?identity=telegram:9", headers=ADMIN)
    ).status_code == 404
    assert (await api.client.get(f"/api/v1/users/{user['id']}", headers=STAFF)).status_code == 403
    erased = await api.client.delete(f"/api/v1/users/{user['id']}", headers=ADMIN)
    assert (await erased.get_json())["rows"] > 0
    after = await (await api.client.get(f"/api/v1/users/{user['id']}", headers=ADMIN)).get_json()
    assert (after["identities"], after["display_name"]) == ([], None)
    assert after["forgotten_at"] is not None
    assert (await api.client.delete("/api/v1/users/999", headers=ADMIN)).status_code == 404
    (entry,) = [e for e in await api.store.audit_entries(limit=5) if e.action == "user.erase"]
    assert (entry.actor, entry.role, entry.target) == ("root", "admin", f"user:{user['id']}")
    audit = await (await api.client.get("/api/v1/audit", headers=ADMIN)).get_json()
    assert audit["entries"][0]["action"] == "user.erase"


async def test_admins_link_two_persons_and_unlink_an_identity_with_an_audit_entry(
    api: Api,
) -> None:
    handoff_id, marie = await seed_handoff(api.store, "111", name="Marie")
    whatsapp = await api.store.resolve_user(Channel.WAHA, "waha:221770000001@c.us")
    url = f"/api/v1/users/{whatsapp}/link"
    assert (await api.client.post(url, json={"user_id": marie}, headers=STAFF)).status_code == 403
    missing = await api.client.post(url, json={"user_id": 999}, headers=ADMIN)
    assert missing.status_code == 404

    linked = await api.client.post(url, json={"user_id": marie}, headers=ADMIN)

    assert linked.status_code == 200
    person = await linked.get_json()
    assert person["id"] == marie  # the older person is kept
    assert person["active_handoff_id"] == handoff_id
    assert sorted(i["user_key"] for i in person["identities"]) == [
        "telegram:111",
        "waha:221770000001@c.us",
    ]
    (entry,) = [e for e in await api.store.audit_entries(limit=5) if e.action == "user.link"]
    assert (entry.actor, entry.target, entry.detail) == (
        "root",
        f"user:{marie}",
        f"merged user:{whatsapp}",
    )

    unlink = f"/api/v1/users/{marie}/unlink"
    body = {"identity": "waha:221770000001@c.us"}
    unlinked = await api.client.post(unlink, json=body, headers=ADMIN)
    assert unlinked.status_code == 200
    apart = await unlinked.get_json()
    assert [i["user_key"] for i in apart["identities"]] == ["waha:221770000001@c.us"]
    assert apart["id"] != marie
    assert apart["active_handoff_id"] is None  # the history and the handoff stay with Marie
    again = await api.client.post(unlink, json={"identity": "telegram:111"}, headers=ADMIN)
    assert again.status_code == 409
    assert "another channel" in (await again.get_json())["detail"]
    stranger = await api.client.post(unlink, json=body, headers=ADMIN)
    assert stranger.status_code == 404
    actions = [e.action for e in await api.store.audit_entries(limit=5)]
    assert actions[:2] == ["user.unlink", "user.link"]
