"""Settings of the staff desk: the operator API's keys and claims, and where the staff chat is."""

from __future__ import annotations

import pytest

from concierge.protocol import Channel
from concierge.settings import SettingsError, load_settings, secrets_of


def test_jwt_keys_the_first_signs_and_every_secret_is_masked() -> None:
    settings = load_settings(
        {
            "CONCIERGE_JWT_KEYS": "2026=" + "a" * 32 + ", 2025=" + "b" * 40,
            "CONCIERGE_JWT_ISSUER": "paroisse",
        }
    )
    api = settings.api
    assert api.enabled
    assert [k.kid for k in api.keys] == ["2026", "2025"]
    assert (api.issuer, api.audience) == ("paroisse", "concierge-api")
    assert {"a" * 32, "b" * 40} <= set(secrets_of(settings))
    assert "a" * 32 not in repr(api)


def test_without_keys_the_api_is_off() -> None:
    assert not load_settings({}).api.enabled


def test_the_staff_chat_reaches_the_channel_it_is_on() -> None:
    on_telegram = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123456789:" + "A" * 30,
            "CONCIERGE_STAFF_CHANNEL": "telegram",
            "CONCIERGE_STAFF_CHAT_ID": "-1001234567890",
        }
    )
    assert on_telegram.telegram is not None
    assert on_telegram.telegram.staff_chat_id == "-1001234567890"
    assert on_telegram.conversation.staff_channel is Channel.TELEGRAM
    on_waha = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123456789:" + "A" * 30,
            "WAHA_URL": "http://waha:3000",
            "WAHA_ALLOW_UNSIGNED": "true",
            "CONCIERGE_STAFF_CHANNEL": "waha",
            "CONCIERGE_STAFF_CHAT_ID": "120363000000000001@g.us",
        }
    )
    assert on_waha.waha is not None
    assert on_waha.waha.staff_chat_id == "120363000000000001@g.us"
    assert on_waha.telegram is not None
    assert on_waha.telegram.staff_chat_id is None


def test_a_telegram_staff_chat_id_is_a_number() -> None:
    with pytest.raises(
        SettingsError, match="CONCIERGE_STAFF_CHAT_ID: a Telegram chat id is a number"
    ):
        load_settings({"CONCIERGE_STAFF_CHANNEL": "telegram", "CONCIERGE_STAFF_CHAT_ID": "@parish"})
