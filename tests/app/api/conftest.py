"""The operator API on the daemon's app, over a real SQLite store and a live provider pool.

``api`` gives a test client of the app as ``concierge run`` builds it (the API
installed, the console mounted), the store and pool behind it, and ``mint`` makes
tokens, valid or broken on purpose.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio

from actors import ProviderPool
from concierge.app.api import ApiDeps, ApiStatus, install_api
from concierge.app.console import console_blueprint
from concierge.app.http import create_app
from concierge.domain import Desk, LivePersons, People, StaffChat
from concierge.observability import HealthBoard
from concierge.protocol import Channel, OutboxMsg, ServiceType, TurnRecord, utcnow
from concierge.settings import ApiSettings, HttpSettings, JwtKey
from concierge.store import Store, open_store
from tests import shipped
from tests.providers.scripted import ScriptedAdapter, pool_settings, provider_settings
from tests.store.test_contract import inbound
from tests.stores import store_settings

CURRENT = JwtKey(kid="2026-a", secret=b"c" * 64)
PREVIOUS = JwtKey(kid="2025-b", secret=b"p" * 32)
API_SETTINGS = ApiSettings(keys=(CURRENT, PREVIOUS), issuer="concierge", audience="concierge-api")
HTTP = HttpSettings(
    host="127.0.0.1", port=0, max_body_bytes=64 * 1024, read_timeout_s=5, graceful_timeout_s=1
)
STAFF_CHAT = StaffChat(channel=Channel.TELEGRAM, chat_id="-1001234")


def mint(
    *,
    role: str | None = "staff",
    sub: str = "alice",
    key: JwtKey = CURRENT,
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    algorithm: str = "HS256",
    signing_key: Any = None,
    **claims: Any,
) -> str:
    """A token like ``concierge token issue`` makes, with ``claims`` and ``headers`` changed."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": "concierge",
        "aud": "concierge-api",
        "sub": sub,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + 86_400,  # the module-level tokens outlive a slow run of the suite
        "jti": "test",
    }
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    header = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
    return jwt.encode(
        body,
        signing_key if signing_key is not None else key.secret,
        algorithm=algorithm,
        headers=header,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


STAFF = bearer(mint())
ADMIN = bearer(mint(role="admin", sub="root"))


@attrs.define(kw_only=True)
class Api:
    client: Any
    store: Store
    pool: ProviderPool
    adapter: ScriptedAdapter
    status: ApiStatus
    nudges: trio.MemoryReceiveChannel[OutboxMsg]

    async def handoff(self, user: str = "111", *, name: str = "Marie") -> int:
        """A user (who wrote once and was answered) with an open handoff; its id."""
        return (await seed_handoff(self.store, user, name=name))[0]


async def seed_handoff(store: Store, user: str, *, name: str) -> tuple[int, int]:
    """(handoff id, user id) of a Telegram user who asked for a person and was told so."""
    user_key = f"telegram:{user}"
    uid = await store.resolve_user(Channel.TELEGRAM, user_key, display_name=name)
    conversation = await store.conversation_for(uid)
    opened = await store.open_handoff(
        conversation_id=conversation.conversation_id,
        user_key=user_key,
        reason="command",
        correlation_id=f"open-{user}",
    )
    accepted = await store.accept(inbound(f"m-{user}", user=user_key, text="Bonjour"))
    await store.complete_turn(
        TurnRecord(
            inbox_id=accepted.inbox_id,
            conversation_id=conversation.conversation_id,
            correlation_id=f"turn-{user}",
            service_type=ServiceType.CONTACT_HUMAIN,
            inbound_text="Je voudrais parler à quelqu'un",
            outbound_text="Je transmets votre demande.",
        )
    )
    return opened.handoff_id, uid


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    adapter = ScriptedAdapter("anthropic")
    pool = ProviderPool(
        adapters=[adapter],
        settings=pool_settings(provider_settings("anthropic", keys=("main", "spare"))),
    )
    nudge_send, nudge_receive = trio.open_memory_channel[OutboxMsg](100)
    async with open_store(store_settings(data_dir=tmp_path)) as store:
        desk = Desk(
            store=store,
            languages=shipped.languages(),
            outbox_nudges={Channel.TELEGRAM: nudge_send},
            staff=STAFF_CHAT,
            persons=LivePersons(store=store, people=People(), wait_s=5.0),
        )
        status = ApiStatus(signing_keys=2)
        board = HealthBoard(version="0.1.0")
        board.register(status)
        deps = ApiDeps(settings=API_SETTINGS, desk=desk, pool=pool, status=status)
        app = create_app(
            board=board,
            settings=HTTP,
            blueprints=[console_blueprint()],
            install=[partial(install_api, deps=deps)],
        )
        yield Api(
            client=app.test_client(),
            store=store,
            pool=pool,
            adapter=adapter,
            status=status,
            nudges=nudge_receive,
        )


def now_s() -> int:
    return int(utcnow().timestamp())
