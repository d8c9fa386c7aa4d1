"""Admins see each provider key's state and take a key out of the live pool, or back in."""

from __future__ import annotations

import pytest

from concierge.protocol import Completion, ProviderCall
from concierge.providers.keys import KeyState
from tests.app.api.conftest import ADMIN, STAFF, Api

pytestmark = pytest.mark.anyio

CALL = ProviderCall(correlation_id="c1", system="s", turns=(), max_tokens=10, timeout_s=5.0)


async def keys(api: Api) -> list[dict[str, object]]:
    listed = await (await api.client.get("/api/v1/providers", headers=ADMIN)).get_json()
    (provider,) = listed["providers"]
    assert (provider["name"], provider["breaker"]) == ("anthropic", "closed")
    return list(provider["keys"])


async def test_keys_show_their_state_and_an_admin_disables_one_in_the_running_pool(
    api: Api,
) -> None:
    assert [(k["alias"], k["state"]) for k in await keys(api)] == [
        ("main", "enabled"),
        ("spare", "enabled"),
    ]
    disabled = await api.client.post(
        "/api/v1/providers/anthropic/keys/main/disable",
        headers=ADMIN,
        json={"reason": "leaked in a screenshot"},
    )
    assert disabled.status_code == 200
    body = await disabled.get_json()
    assert (body["state"], body["disabled_reason"], body["disabled_by"]) == (
        "disabled",
        "leaked in a screenshot",
        "root",
    )
    for _ in range(3):
        assert isinstance(await api.pool.complete(CALL), Completion)
    assert [key.alias for _, key in api.adapter.calls] == ["spare"] * 3
    stats = api.pool.statistics().provider("anthropic").keys
    assert [k.state for k in stats] == [KeyState.DISABLED, KeyState.ENABLED]

    enabled = await api.client.post("/api/v1/providers/anthropic/keys/main/enable", headers=ADMIN)
    assert (await enabled.get_json())["state"] == "enabled"
    await api.pool.complete(CALL)
    assert api.adapter.calls[-1][1].alias == "main"
    audit = [(e.action, e.target, e.detail) for e in await api.store.audit_entries(limit=5)]
    assert audit == [
        ("provider_key.enable", "key:anthropic/main", ""),
        ("provider_key.disable", "key:anthropic/main", "leaked in a screenshot"),
    ]


async def test_key_changes_need_an_admin_a_reason_and_a_real_key(api: Api) -> None:
    path = "/api/v1/providers/anthropic/keys/main/disable"
    assert (await api.client.post(path, headers=STAFF, json={"reason": "x"})).status_code == 403
    assert (await api.client.get("/api/v1/providers", headers=STAFF)).status_code == 403
    missing = await api.client.post(path, headers=ADMIN, json={})
    assert missing.status_code == 400
    assert "reason" in (await missing.get_json())["detail"]
    unknown = await api.client.post(
        "/api/v1/providers/anthropic/keys/nope/disable", headers=ADMIN, json={"reason": "x"}
    )
    assert unknown.status_code == 404
    assert (await unknown.get_json())["detail"] == "provider 'anthropic' has no API key 'nope'"
    assert [k["state"] for k in await keys(api)] == ["enabled", "enabled"]
    assert await api.store.audit_entries(limit=5) == []
