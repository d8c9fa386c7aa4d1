"""Settings: defaults, validation messages that name the variable, masking, the example file."""

from __future__ import annotations

from pathlib import Path

import pytest

from concierge.settings import Settings, SettingsError, describe, env_example, load_settings
from concierge.settings.options import OPTIONS

NO_FILE = Path("/nonexistent/.env")


def load(**env: str) -> Settings:
    return load_settings(env, env_file=NO_FILE)


def test_embedded_defaults_need_no_configuration() -> None:
    settings = load()
    assert settings.http.host == "127.0.0.1"
    assert settings.http.port == 8000
    assert settings.store.database_url is None
    assert settings.store.redis_url is None
    assert [p.name for p in settings.pool.providers] == ["offline"]
    assert settings.telegram is None
    assert settings.waha is None


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "postgres://"),
        ({"DATABASE_URL": "postgres://:99999999/db"}, "DATABASE_URL", "host"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL", "redis://"),
        ({"CONCIERGE_TURN_TIMEOUT_S": "-3"}, "CONCIERGE_TURN_TIMEOUT_S", "greater than 0"),
        ({"CONCIERGE_HTTP_PORT": "eighty"}, "CONCIERGE_HTTP_PORT", "whole number"),
        ({"CONCIERGE_USER_DAILY_TOKENS": "-1"}, "CONCIERGE_USER_DAILY_TOKENS", "at least 0"),
        (
            {"CONCIERGE_PROVIDERS": "offline", "CONCIERGE_PROVIDER_DAILY_TOKENS": "lots"},
            "CONCIERGE_PROVIDER_DAILY_TOKENS",
            "whole number",
        ),
        (
            {
                "CONCIERGE_PROVIDERS": "anthropic",
                "ANTHROPIC_API_KEYS": "k",
                "ANTHROPIC_DAILY_TOKENS": "1e6",
            },
            "ANTHROPIC_DAILY_TOKENS",
            "whole number",
        ),
        ({"CONCIERGE_HTTP_PORT": "70000"}, "CONCIERGE_HTTP_PORT", "at most 65535"),
        ({"CONCIERGE_LOG_FORMAT": "xml"}, "CONCIERGE_LOG_FORMAT", "json, console, auto"),
        ({"CONCIERGE_PROVIDERS": "mystery"}, "MYSTERY_KIND", "set its kind"),
        (
            {"CONCIERGE_PROVIDERS": "x", "X_KIND": "cohere"},
            "X_KIND",
            "anthropic, gemini, openai, offline",
        ),
        ({"CONCIERGE_PROVIDERS": "anthropic"}, "ANTHROPIC_API_KEYS", "no keys"),
        (
            {"CONCIERGE_PROVIDERS": "anthropic", "ANTHROPIC_API_KEYS": "a,,b"},
            "ANTHROPIC_API_KEYS",
            "empty",
        ),
        (
            {"CONCIERGE_PROVIDERS": "anthropic", "ANTHROPIC_API_KEYS": "main="},
            "ANTHROPIC_API_KEYS",
            "no key after",
        ),
        (
            {"CONCIERGE_PROVIDERS": "anthropic", "ANTHROPIC_API_KEYS": "a=k1,a=k2"},
            "ANTHROPIC_API_KEYS",
            "share an alias",
        ),
        ({"CONCIERGE_PROVIDERS": "offline,offline"}, "CONCIERGE_PROVIDERS", "named twice"),
        (
            {"CONCIERGE_BREAKER_FAILURE_RATE": "1.5"},
            "CONCIERGE_BREAKER_FAILURE_RATE",
            "between 0 and 1",
        ),
        ({"TELEGRAM_BOT_TOKEN": "nope"}, "TELEGRAM_BOT_TOKEN", "123456789:AA"),
        (
            {
                "TELEGRAM_BOT_TOKEN": "123456:" + "A" * 35,
                "TELEGRAM_MODE": "webhook",
                "TELEGRAM_WEBHOOK_URL": "https://x.org/w",
            },
            "TELEGRAM_WEBHOOK_SECRET",
            "refuses to start without a secret",
        ),
        ({"WAHA_URL": "http://waha:3000"}, "WAHA_WEBHOOK_HMAC_KEY", "refuses unsigned"),
        (
            {"WAHA_URL": "http://waha:3000", "WAHA_ALLOW_UNSIGNED": "maybe"},
            "WAHA_ALLOW_UNSIGNED",
            "true or false",
        ),
        ({"CONCIERGE_STAFF_CHANNEL": "telegram"}, "CONCIERGE_STAFF_CHAT_ID", "both"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_right(
    env: dict[str, str], variable: str, fragment: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(**env)
    assert caught.value.variable == variable
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"{variable}: ")


def test_provider_names_keys_and_order_are_parsed() -> None:
    settings = load(
        CONCIERGE_PROVIDERS="anthropic, openrouter,offline",
        ANTHROPIC_API_KEYS="main=sk-ant-aaaaaaaa,backup=sk-ant-bbbbbbbb",
        OPENROUTER_API_KEYS="sk-or-v1-cccccccc",
        OPENROUTER_BASE_URL="http://127.0.0.1:9999/api/v1/",
    )
    anthropic, openrouter, offline = settings.pool.providers
    assert [k.alias for k in anthropic.keys] == ["main", "backup"]
    assert anthropic.keys[1].secret == "sk-ant-bbbbbbbb"
    assert openrouter.kind == "openai"
    assert openrouter.base_url == "http://127.0.0.1:9999/api/v1"
    assert [k.alias for k in openrouter.keys] == ["#1"]
    assert offline.kind == "offline"


def test_daily_token_budgets_have_defaults_and_a_provider_may_have_its_own() -> None:
    settings = load(
        CONCIERGE_PROVIDERS="anthropic,gemini,offline",
        ANTHROPIC_API_KEYS="k1",
        GEMINI_API_KEYS="k2",
        GEMINI_DAILY_TOKENS="0",
    )
    assert settings.conversation.user_daily_tokens == 60_000
    budgets = {p.name: p.daily_tokens for p in settings.pool.providers}
    assert budgets == {"anthropic": 5_000_000, "gemini": 0, "offline": 0}
    assert load(CONCIERGE_USER_DAILY_TOKENS="0").conversation.user_daily_tokens == 0


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CONCIERGE_HTTP_PORT=9001\nCONCIERGE_LOG_LEVEL=debug\n")
    settings = load_settings({"CONCIERGE_HTTP_PORT": "9002"}, env_file=env_file)
    assert settings.http.port == 9002
    assert settings.log.level == "debug"


def test_check_output_masks_every_secret() -> None:
    settings = load(
        CONCIERGE_PROVIDERS="anthropic",
        ANTHROPIC_API_KEYS="main=sk-ant-supersecretvalue",
        DATABASE_URL="postgres://app:hunter2hunter2@db:5432/concierge",
        TELEGRAM_BOT_TOKEN="123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    )
    text = "\n".join(describe(settings))
    assert "supersecretvalue" not in text
    assert "hunter2hunter2" not in text
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in text
    assert "ANTHROPIC_API_KEYS=main (secrets hidden)" in text
    assert "DATABASE_URL=postgres://app:***@db:5432/concierge" in text


def test_example_file_documents_every_option_with_its_default() -> None:
    example = (Path(__file__).parents[2] / "config" / "concierge.env.example").read_text()
    assert example == env_example(), (
        "regenerate with: concierge check --example > config/concierge.env.example"
    )
    for name, option in OPTIONS.items():
        assert f"{name}={option.default or ''}" in example
