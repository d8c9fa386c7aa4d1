"""Read the settings from the environment (and an optional ``.env``), validated once.

A bad value raises ``SettingsError`` naming the variable and what would be right;
the CLI prints that one line and exits non-zero.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from concierge.protocol import Channel
from concierge.settings.errors import SettingsError
from concierge.settings.models import (
    ApiKey,
    ApiSettings,
    BreakerSettings,
    ConversationSettings,
    HttpSettings,
    LogSettings,
    PoolSettings,
    ProviderSettings,
    Settings,
    StoreSettings,
    SupervisionSettings,
    TelegramSettings,
    WahaSettings,
)
from concierge.settings.options import KNOWN_KINDS, OPTIONS, PROVIDER_DEFAULTS
from concierge.settings.parsers import choice, integer, number, parse_api_keys, url
from concierge.settings.paths import DEFAULT_CONFIG_DIR

T = TypeVar("T")


class _Reader:
    """Reads variables through their ``Option``s and remembers what it saw."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.seen: dict[str, tuple[str | None, bool]] = {}

    def raw(self, name: str) -> str | None:
        option = OPTIONS.get(name)
        value = self._environ.get(name)
        if value is not None and value.strip() == "":
            value = None
        if value is None and option is not None:
            value = option.default
        self.seen[name] = (value, option.secret if option else _looks_secret(name))
        return value

    def get(self, name: str) -> Any:
        value = self.raw(name)
        if value is None:
            return None
        return self.parse(name, value, OPTIONS[name].parse)

    def parse(self, name: str, value: str, parser: Callable[[str], T]) -> T:
        try:
            return parser(value)
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None


def _looks_secret(name: str) -> bool:
    return name.endswith(("_KEY", "_KEYS", "_TOKEN", "_SECRET", "_PASSWORD"))


def _provider(reader: _Reader, name: str, attempt_timeout_s: float) -> ProviderSettings:
    prefix = name.upper()
    defaults = PROVIDER_DEFAULTS.get(name)
    kind_raw = reader.raw(f"{prefix}_KIND") or (defaults.kind if defaults else None)
    if kind_raw is None:
        raise SettingsError(
            f"{prefix}_KIND",
            f"provider {name!r} has no defaults: set its kind, one of {', '.join(KNOWN_KINDS)}",
        )
    kind = reader.parse(f"{prefix}_KIND", kind_raw, choice(*KNOWN_KINDS))
    model = reader.raw(f"{prefix}_MODEL") or (
        defaults.model if defaults and defaults.kind == kind else None
    )
    if model is None:
        raise SettingsError(f"{prefix}_MODEL", f"provider {name!r} needs a model name")
    base_url_raw = reader.raw(f"{prefix}_BASE_URL")
    base_url = (
        reader.parse(f"{prefix}_BASE_URL", base_url_raw, url("https", "http"))
        if base_url_raw
        else (defaults.base_url if defaults and defaults.kind == kind else None)
    )
    if base_url is None and kind == "openai":
        raise SettingsError(
            f"{prefix}_BASE_URL", f"provider {name!r} of kind openai needs a base URL"
        )
    keys_raw = reader.raw(f"{prefix}_API_KEYS")
    keys: tuple[ApiKey, ...] = ()
    if kind == "offline":
        keys = (ApiKey(alias="kb", secret=""),)
    elif keys_raw is None:
        raise SettingsError(
            f"{prefix}_API_KEYS",
            f"provider {name!r} is listed in CONCIERGE_PROVIDERS but has no keys",
        )
    else:
        keys = reader.parse(f"{prefix}_API_KEYS", keys_raw, parse_api_keys)
    budget_raw = reader.raw(f"{prefix}_DAILY_TOKENS")
    daily_tokens = (
        reader.parse(f"{prefix}_DAILY_TOKENS", budget_raw, integer())
        if budget_raw
        else reader.get("CONCIERGE_PROVIDER_DAILY_TOKENS")
    )
    timeout_raw = reader.raw(f"{prefix}_TIMEOUT_S")
    timeout_s = (
        reader.parse(f"{prefix}_TIMEOUT_S", timeout_raw, number(strict=True))
        if timeout_raw
        else attempt_timeout_s
    )
    return ProviderSettings(
        name=name,
        kind=kind,
        model=model,
        base_url=base_url,
        keys=keys,
        timeout_s=timeout_s,
        daily_tokens=0 if kind == "offline" else daily_tokens,
        app_url=reader.raw(f"{prefix}_APP_URL"),
        app_title=reader.raw(f"{prefix}_APP_TITLE"),
    )


_SECRET_CHARS = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def load_settings(
    environ: Mapping[str, str] | None = None, *, env_file: Path | None = None
) -> Settings:
    """Validate everything at once; the first bad variable raises ``SettingsError``.

    Real environment variables win over the ``.env`` file (``./.env`` unless given).
    """
    r = _Reader(_environment(environ, env_file))
    http = _http(r)
    log = LogSettings(level=r.get("CONCIERGE_LOG_LEVEL"), format=r.get("CONCIERGE_LOG_FORMAT"))
    supervision = _supervision(r)
    configured = r.get("CONCIERGE_CONFIG_DIR")
    config_dir = DEFAULT_CONFIG_DIR if configured is None else Path(configured)
    store = _store(r)
    pool = _pool(r)
    conversation = _conversation(r, config_dir=config_dir, store=store, pool=pool)
    # The staff chat's id reaches the channel that carries it: its parser tells staff apart.
    staff_channel, staff_chat_id = conversation.staff_channel, conversation.staff_chat_id
    telegram = _telegram(r, staff_chat_id if staff_channel is Channel.TELEGRAM else None)
    waha = _waha(r, staff_chat_id if staff_channel is Channel.WAHA else None)
    api = _api(r)
    drain_timeout_s = r.get("CONCIERGE_DRAIN_TIMEOUT_S")
    drain_notice_s = r.get("CONCIERGE_DRAIN_NOTICE_S")
    # Read every documented option so `check` shows them all.
    for name in OPTIONS:
        if name not in r.seen:
            r.get(name)
    return Settings(
        http=http,
        log=log,
        supervision=supervision,
        store=store,
        pool=pool,
        conversation=conversation,
        telegram=telegram,
        waha=waha,
        api=api,
        drain_timeout_s=drain_timeout_s,
        drain_notice_s=drain_notice_s,
        config_dir=config_dir,
        effective=tuple((name, value, secret) for name, (value, secret) in r.seen.items()),
    )


def _environment(environ: Mapping[str, str] | None, env_file: Path | None) -> dict[str, str]:
    env: dict[str, str] = {}
    path = env_file if env_file is not None else Path(".env")
    if path.is_file():
        env.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _http(r: _Reader) -> HttpSettings:
    return HttpSettings(
        host=r.get("CONCIERGE_HTTP_HOST"),
        port=r.get("CONCIERGE_HTTP_PORT"),
        max_body_bytes=r.get("CONCIERGE_HTTP_MAX_BODY_BYTES"),
        read_timeout_s=r.get("CONCIERGE_HTTP_READ_TIMEOUT_S"),
        graceful_timeout_s=r.get("CONCIERGE_HTTP_GRACEFUL_TIMEOUT_S"),
    )


def _supervision(r: _Reader) -> SupervisionSettings:
    return SupervisionSettings(
        max_restarts=r.get("CONCIERGE_MAX_RESTARTS"),
        period_s=r.get("CONCIERGE_RESTART_PERIOD_S"),
        backoff_initial_s=r.get("CONCIERGE_BACKOFF_INITIAL_S"),
        backoff_max_s=r.get("CONCIERGE_BACKOFF_MAX_S"),
        reset_after_s=r.get("CONCIERGE_RESET_AFTER_S"),
    )


def _store(r: _Reader) -> StoreSettings:
    return StoreSettings(
        data_dir=Path(r.get("CONCIERGE_DATA_DIR")),
        database_url=r.get("DATABASE_URL"),
        redis_url=r.get("REDIS_URL"),
        pool_size=r.get("CONCIERGE_DB_POOL_SIZE"),
        command_timeout_s=r.get("CONCIERGE_DB_COMMAND_TIMEOUT_S"),
        statement_timeout_s=r.get("CONCIERGE_DB_STATEMENT_TIMEOUT_S"),
        redis_timeout_s=r.get("CONCIERGE_REDIS_TIMEOUT_S"),
        session_ttl_s=r.get("CONCIERGE_SESSION_TTL_S"),
        retention_days=r.get("CONCIERGE_RETENTION_DAYS"),
        replica_id=r.get("CONCIERGE_REPLICA_ID") or default_replica_id(),
        lease_ttl_s=r.get("CONCIERGE_LEASE_TTL_S"),
    )


def default_replica_id() -> str:
    """Unique among live processes: two replicas never share a name by accident."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _pool(r: _Reader) -> PoolSettings:
    attempt_timeout_s = r.get("CONCIERGE_ATTEMPT_TIMEOUT_S")
    providers = tuple(
        _provider(r, name, attempt_timeout_s) for name in r.get("CONCIERGE_PROVIDERS")
    )
    open_s, open_max_s = r.get("CONCIERGE_BREAKER_OPEN_S"), r.get("CONCIERGE_BREAKER_OPEN_MAX_S")
    if open_max_s < open_s:
        raise SettingsError(
            "CONCIERGE_BREAKER_OPEN_MAX_S",
            f"must be at least CONCIERGE_BREAKER_OPEN_S ({open_s:g})",
        )
    rate = r.get("CONCIERGE_BREAKER_FAILURE_RATE")
    if rate > 1:
        raise SettingsError(
            "CONCIERGE_BREAKER_FAILURE_RATE", f"a rate between 0 and 1, got {rate:g}"
        )
    turn_timeout_s = r.get("CONCIERGE_TURN_TIMEOUT_S")
    max_tokens = r.get("CONCIERGE_MAX_TOKENS")
    return PoolSettings(
        providers=providers,
        turn_timeout_s=turn_timeout_s,
        attempt_timeout_s=attempt_timeout_s,
        max_attempts=r.get("CONCIERGE_MAX_ATTEMPTS"),
        max_tokens=max_tokens,
        breaker=BreakerSettings(
            window=r.get("CONCIERGE_BREAKER_WINDOW"),
            min_calls=r.get("CONCIERGE_BREAKER_MIN_CALLS"),
            failure_rate=rate,
            consecutive=r.get("CONCIERGE_BREAKER_CONSECUTIVE"),
            open_s=open_s,
            open_max_s=open_max_s,
        ),
        credit_poll_s=r.get("CONCIERGE_CREDIT_POLL_S"),
    )


def _conversation(
    r: _Reader, *, config_dir: Path, store: StoreSettings, pool: PoolSettings
) -> ConversationSettings:
    staff_channel = r.get("CONCIERGE_STAFF_CHANNEL")
    staff_chat_id = r.get("CONCIERGE_STAFF_CHAT_ID")
    if (staff_channel is None) != (staff_chat_id is None):
        missing = "CONCIERGE_STAFF_CHAT_ID" if staff_chat_id is None else "CONCIERGE_STAFF_CHANNEL"
        raise SettingsError(
            missing,
            "staff notifications need both CONCIERGE_STAFF_CHANNEL and CONCIERGE_STAFF_CHAT_ID",
        )
    if staff_channel == Channel.TELEGRAM and not re.match(r"^-?\d{1,20}$", staff_chat_id or ""):
        raise SettingsError(
            "CONCIERGE_STAFF_CHAT_ID",
            f"a Telegram chat id is a number (a group's is negative, e.g. -1001234567890), "
            f"got {staff_chat_id!r}",
        )
    return ConversationSettings(
        config_dir=config_dir,
        idle_s=r.get("CONCIERGE_CONVERSATION_IDLE_S"),
        queue_size=r.get("CONCIERGE_CONVERSATION_QUEUE"),
        max_turns=r.get("CONCIERGE_MAX_TURNS"),
        loop_lag_target_s=r.get("CONCIERGE_LOOP_LAG_TARGET_S"),
        context_turns=r.get("CONCIERGE_CONTEXT_TURNS"),
        context_chars=r.get("CONCIERGE_CONTEXT_CHARS"),
        rate_per_min=r.get("CONCIERGE_USER_RATE_PER_MIN"),
        burst=r.get("CONCIERGE_USER_BURST"),
        max_message_chars=r.get("CONCIERGE_MAX_MESSAGE_CHARS"),
        handoff_timeout_s=r.get("CONCIERGE_HANDOFF_TIMEOUT_S"),
        staff_channel=Channel(staff_channel) if staff_channel else None,
        staff_chat_id=staff_chat_id,
        session_ttl_s=store.session_ttl_s,
        turn_timeout_s=pool.turn_timeout_s,
        max_tokens=pool.max_tokens,
        user_daily_tokens=r.get("CONCIERGE_USER_DAILY_TOKENS"),
    )


def _telegram(r: _Reader, staff_chat_id: str | None) -> TelegramSettings | None:
    token = r.get("TELEGRAM_BOT_TOKEN")
    mode = r.get("TELEGRAM_MODE")
    webhook_url = r.get("TELEGRAM_WEBHOOK_URL")
    secret = r.get("TELEGRAM_WEBHOOK_SECRET")
    api_base_url = r.get("TELEGRAM_API_BASE_URL")
    poll_timeout_s = r.get("TELEGRAM_POLL_TIMEOUT_S")
    max_connections = r.get("TELEGRAM_MAX_CONNECTIONS")
    send_rate_per_s = r.get("TELEGRAM_SEND_RATE_PER_S")
    chat_interval_s = r.get("TELEGRAM_CHAT_INTERVAL_S")
    if token is None:
        return None
    if not re.match(r"^\d+:[A-Za-z0-9_-]{20,}$", token):
        raise SettingsError(
            "TELEGRAM_BOT_TOKEN", "expected the form 123456789:AA... from @BotFather"
        )
    if secret is not None and not _SECRET_CHARS.match(secret):
        raise SettingsError(
            "TELEGRAM_WEBHOOK_SECRET", "1 to 256 characters of A-Z, a-z, 0-9, _ and -"
        )
    if mode == "webhook":
        if secret is None:
            raise SettingsError(
                "TELEGRAM_WEBHOOK_SECRET", "webhook mode refuses to start without a secret token"
            )
        if webhook_url is None:
            raise SettingsError(
                "TELEGRAM_WEBHOOK_URL", "webhook mode needs the public URL Telegram posts to"
            )
    return TelegramSettings(
        bot_token=token,
        mode=mode,
        webhook_url=webhook_url,
        webhook_secret=secret,
        api_base_url=api_base_url,
        poll_timeout_s=poll_timeout_s,
        max_connections=max_connections,
        send_rate_per_s=send_rate_per_s,
        chat_interval_s=chat_interval_s,
        staff_chat_id=staff_chat_id,
    )


def _waha(r: _Reader, staff_chat_id: str | None) -> WahaSettings | None:
    url = r.get("WAHA_URL")
    api_key = r.get("WAHA_API_KEY")
    session = r.get("WAHA_SESSION")
    hmac_key = r.get("WAHA_WEBHOOK_HMAC_KEY")
    allow_unsigned = r.get("WAHA_ALLOW_UNSIGNED")
    window = r.get("WAHA_TIMESTAMP_WINDOW_S")
    allow_groups = r.get("WAHA_ALLOW_GROUPS")
    typing_chars_per_s = r.get("WAHA_TYPING_CHARS_PER_S")
    typing_max_s = r.get("WAHA_TYPING_MAX_S")
    max_part_chars = r.get("WAHA_MAX_PART_CHARS")
    send_rate_per_s = r.get("WAHA_SEND_RATE_PER_S")
    chat_interval_s = r.get("WAHA_CHAT_INTERVAL_S")
    if url is None:
        return None
    if hmac_key is None and not allow_unsigned:
        raise SettingsError(
            "WAHA_WEBHOOK_HMAC_KEY",
            "the WAHA channel refuses unsigned webhooks: set the HMAC key (or WAHA_ALLOW_UNSIGNED=true, not for production)",
        )
    return WahaSettings(
        url=url,
        api_key=api_key,
        session=session,
        hmac_key=hmac_key,
        allow_unsigned=allow_unsigned,
        timestamp_window_s=window,
        allow_groups=allow_groups,
        typing_chars_per_s=typing_chars_per_s,
        typing_max_s=typing_max_s,
        max_part_chars=max_part_chars,
        send_rate_per_s=send_rate_per_s,
        chat_interval_s=chat_interval_s,
        staff_chat_id=staff_chat_id,
    )


def _api(r: _Reader) -> ApiSettings:
    return ApiSettings(
        keys=r.get("CONCIERGE_JWT_KEYS") or (),
        issuer=r.get("CONCIERGE_JWT_ISSUER"),
        audience=r.get("CONCIERGE_JWT_AUDIENCE"),
    )
