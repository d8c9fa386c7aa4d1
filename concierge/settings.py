"""Typed, frozen settings read from the environment (and an optional ``.env``), validated once.

Every option is declared once in ``OPTIONS`` (name, default, meaning, parser), so
validation, ``concierge check`` and ``config/concierge.env.example`` cannot drift
apart. A bad value raises ``SettingsError`` naming the variable and what would be
right; the CLI prints that one line and exits non-zero.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import attrs
from dotenv import dotenv_values

from concierge.protocol import Channel
from concierge.providers.base import ApiKey

T = TypeVar("T")


class SettingsError(ValueError):
    """One setting is wrong; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


# -- parsers ---------------------------------------------------------------------------
def _text(value: str) -> str:
    return value


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(*, minimum: float = 0.0, strict: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {value!r}")
        if number < minimum or (strict and number == minimum):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            raise ValueError(f"must be {bound}, got {value!r}")
        return number

    return parse


def _integer(*, minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}, got {number}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(
                f"expected a URL starting with {' or '.join(s + '://' for s in schemes)} and a host"
            )
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError("the URL's port is not a number between 0 and 65535") from None
        return value.strip().rstrip("/")

    return parse


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if not names:
        raise ValueError("name at least one provider, e.g. offline")
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a provider name (letters, digits, underscore)")
    if len(set(names)) != len(names):
        raise ValueError("a provider is named twice")
    return names


_KEY_ALIAS = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def parse_api_keys(value: str) -> tuple[ApiKey, ...]:
    """``key1,key2`` or ``alias=key,alias2=key2``; unnamed keys get ``#1``, ``#2`` aliases."""
    keys: list[ApiKey] = []
    for position, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            raise ValueError(f"key #{position} is empty (a stray comma?)")
        alias, sep, secret = item.partition("=")
        if sep and _KEY_ALIAS.match(alias) and secret:
            keys.append(ApiKey(alias=alias, secret=secret.strip()))
        elif sep and not secret:
            raise ValueError(f"key #{position} has an alias but no key after '='")
        else:
            if any(c.isspace() for c in item):
                raise ValueError(f"key #{position} contains white space")
            keys.append(ApiKey(alias=f"#{position}", secret=item))
    aliases = [k.alias for k in keys]
    if len(set(aliases)) != len(aliases):
        raise ValueError("two keys share an alias")
    return tuple(keys)


# -- the option registry ----------------------------------------------------------------
@attrs.frozen
class Option(Generic[T]):
    name: str
    default: str | None
    doc: str
    parse: Callable[[str], T]
    secret: bool = False
    group: str = "general"


OPTIONS: dict[str, Option[Any]] = {}


def _opt(
    name: str,
    default: str | None,
    doc: str,
    parse: Callable[[str], Any] = _text,
    *,
    secret: bool = False,
    group: str = "general",
) -> str:
    OPTIONS[name] = Option(name, default, doc, parse, secret, group)
    return name


H = "http"
_opt("CONCIERGE_HTTP_HOST", "127.0.0.1", "address the HTTP app listens on", group=H)
_opt(
    "CONCIERGE_HTTP_PORT",
    "8000",
    "port the HTTP app listens on (0 picks a free one)",
    _integer(maximum=65535),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_MAX_BODY_BYTES",
    "1048576",
    "largest request body accepted (413 above)",
    _integer(minimum=1024),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_READ_TIMEOUT_S",
    "10",
    "seconds a client may take to send its request",
    _number(strict=True),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_GRACEFUL_TIMEOUT_S",
    "5",
    "seconds in-flight requests get at shutdown",
    _number(),
    group=H,
)
G = "general"
_opt("CONCIERGE_DATA_DIR", "./var", "where the embedded SQLite store lives", group=G)
_opt("CONCIERGE_CONFIG_DIR", "./config", "knowledge, prompts and triage rules", group=G)
_opt(
    "CONCIERGE_LOG_LEVEL",
    "info",
    "debug, info, warning or error",
    _choice("debug", "info", "warning", "error"),
    group=G,
)
_opt(
    "CONCIERGE_LOG_FORMAT",
    "auto",
    "json, console, or auto (console on a TTY, JSON otherwise)",
    _choice("json", "console", "auto"),
    group=G,
)
_opt(
    "CONCIERGE_DRAIN_TIMEOUT_S",
    "20",
    "seconds the daemon takes at most to stop after SIGTERM",
    _number(strict=True),
    group=G,
)
S = "supervision"
_opt(
    "CONCIERGE_MAX_RESTARTS",
    "5",
    "restarts a supervisor allows within the period before giving up",
    _integer(),
    group=S,
)
_opt(
    "CONCIERGE_RESTART_PERIOD_S",
    "60",
    "the restart-intensity window in seconds",
    _number(strict=True),
    group=S,
)
_opt(
    "CONCIERGE_BACKOFF_INITIAL_S",
    "0.5",
    "first restart delay; doubles per restart",
    _number(),
    group=S,
)
_opt("CONCIERGE_BACKOFF_MAX_S", "30", "longest restart delay", _number(), group=S)
_opt(
    "CONCIERGE_RESET_AFTER_S",
    "60",
    "a child up this long gets its backoff reset",
    _number(),
    group=S,
)
D = "stores"
_opt(
    "DATABASE_URL",
    None,
    "PostgreSQL DSN; unset uses SQLite in the data dir",
    _url("postgres", "postgresql"),
    secret=True,
    group=D,
)
_opt(
    "REDIS_URL",
    None,
    "Redis URL; unset uses an in-memory session cache",
    _url("redis", "rediss"),
    secret=True,
    group=D,
)
_opt(
    "CONCIERGE_DB_POOL_SIZE",
    "5",
    "PostgreSQL connections in the pool",
    _integer(minimum=1, maximum=100),
    group=D,
)
_opt(
    "CONCIERGE_DB_COMMAND_TIMEOUT_S",
    "5",
    "client-side timeout of one PostgreSQL command",
    _number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_DB_STATEMENT_TIMEOUT_S",
    "5",
    "server-side statement_timeout",
    _number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_REDIS_TIMEOUT_S",
    "0.5",
    "timeout of one Redis command",
    _number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_SESSION_TTL_S",
    "604800",
    "how long a cached context window lives",
    _number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_RETENTION_DAYS",
    "90",
    "message texts older than this are erased (0 keeps them)",
    _integer(),
    group=D,
)
P = "providers"
_opt(
    "CONCIERGE_PROVIDERS",
    "offline",
    "providers in the order they are tried, e.g. anthropic,gemini,openrouter,offline",
    _names,
    group=P,
)
_opt(
    "CONCIERGE_TURN_TIMEOUT_S",
    "30",
    "one deadline per turn covering every attempt",
    _number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_ATTEMPT_TIMEOUT_S",
    "20",
    "the longest one provider attempt may take",
    _number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_MAX_ATTEMPTS",
    "3",
    "provider attempts per turn at most",
    _integer(minimum=1, maximum=10),
    group=P,
)
_opt("CONCIERGE_MAX_TOKENS", "800", "reply length cap in tokens", _integer(minimum=16), group=P)
_opt(
    "CONCIERGE_BREAKER_WINDOW",
    "20",
    "recent calls the breaker's failure rate looks at",
    _integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_MIN_CALLS",
    "5",
    "calls in the window before the rate can open the breaker",
    _integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_FAILURE_RATE",
    "0.5",
    "transient-failure rate that opens the breaker",
    _number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_CONSECUTIVE",
    "5",
    "consecutive transient failures that open the breaker",
    _integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_OPEN_S",
    "30",
    "first open duration; grows with consecutive openings",
    _number(strict=True),
    group=P,
)
_opt("CONCIERGE_BREAKER_OPEN_MAX_S", "300", "longest open duration", _number(strict=True), group=P)
_opt(
    "CONCIERGE_CREDIT_POLL_S",
    "300",
    "how often OpenRouter key credit is polled",
    _number(strict=True),
    group=P,
)
C = "conversations"
_opt(
    "CONCIERGE_CONVERSATION_IDLE_S",
    "900",
    "an idle conversation actor ends after this (its context stays)",
    _number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_CONVERSATION_QUEUE",
    "4",
    "messages one user may have waiting before 'one moment' replies",
    _integer(minimum=1, maximum=64),
    group=C,
)
_opt("CONCIERGE_CONTEXT_TURNS", "12", "context window size in turns", _integer(minimum=0), group=C)
_opt(
    "CONCIERGE_CONTEXT_CHARS",
    "6000",
    "context window size in characters",
    _integer(minimum=0),
    group=C,
)
_opt(
    "CONCIERGE_USER_RATE_PER_MIN",
    "6",
    "messages per minute one user may send (token bucket rate)",
    _number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_USER_BURST",
    "5",
    "messages one user may send at once (token bucket size)",
    _integer(minimum=1),
    group=C,
)
_opt(
    "CONCIERGE_MAX_MESSAGE_CHARS",
    "2000",
    "longer messages are refused with the limit",
    _integer(minimum=1),
    group=C,
)
_opt(
    "CONCIERGE_HANDOFF_TIMEOUT_S",
    "86400",
    "an open handoff closes by itself after this",
    _number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_STAFF_CHANNEL",
    None,
    "channel staff notifications go to (telegram or waha)",
    _choice("telegram", "waha"),
    group=C,
)
_opt("CONCIERGE_STAFF_CHAT_ID", None, "chat id staff notifications go to", group=C)
T_ = "telegram"
_opt(
    "TELEGRAM_BOT_TOKEN",
    None,
    "bot token from @BotFather; unset turns Telegram off",
    secret=True,
    group=T_,
)
_opt("TELEGRAM_MODE", "polling", "polling or webhook", _choice("polling", "webhook"), group=T_)
_opt(
    "TELEGRAM_WEBHOOK_URL",
    None,
    "public HTTPS URL of POST /webhooks/telegram (webhook mode)",
    _url("https", "http"),
    group=T_,
)
_opt(
    "TELEGRAM_WEBHOOK_SECRET",
    None,
    "secret_token for webhook mode (1-256 of A-Z a-z 0-9 _ -)",
    secret=True,
    group=T_,
)
_opt(
    "TELEGRAM_API_BASE_URL",
    "https://api.telegram.org",
    "Bot API server (a self-hosted one, or a fake in tests)",
    _url("https", "http"),
    group=T_,
)
_opt(
    "TELEGRAM_POLL_TIMEOUT_S",
    "50",
    "getUpdates long-poll timeout (at most 50)",
    _integer(minimum=1, maximum=50),
    group=T_,
)
_opt(
    "TELEGRAM_MAX_CONNECTIONS",
    "40",
    "setWebhook max_connections",
    _integer(minimum=1, maximum=100),
    group=T_,
)
W = "waha"
_opt("WAHA_URL", None, "WAHA base URL; unset turns WhatsApp off", _url("https", "http"), group=W)
_opt("WAHA_API_KEY", None, "X-Api-Key for WAHA", secret=True, group=W)
_opt("WAHA_SESSION", "default", "WAHA session name", group=W)
_opt(
    "WAHA_WEBHOOK_HMAC_KEY",
    None,
    "key WAHA signs webhooks with (HMAC-SHA512)",
    secret=True,
    group=W,
)
_opt(
    "WAHA_ALLOW_UNSIGNED",
    "false",
    "accept unsigned WAHA webhooks (not for production)",
    _bool,
    group=W,
)
_opt(
    "WAHA_TIMESTAMP_WINDOW_S",
    "600",
    "oldest X-Webhook-Timestamp accepted (covers WAHA's retries)",
    _number(strict=True),
    group=W,
)
_opt("WAHA_ALLOW_GROUPS", "false", "answer messages in WhatsApp groups", _bool, group=W)
_opt(
    "WAHA_TYPING_CHARS_PER_S",
    "40",
    "simulated typing speed: the 'typing...' pause before a reply grows with its length",
    _number(strict=True),
    group=W,
)
_opt(
    "WAHA_TYPING_MAX_S",
    "4",
    "longest 'typing...' pause before one reply part (0 sends at once)",
    _number(),
    group=W,
)
_opt(
    "WAHA_MAX_PART_CHARS",
    "4000",
    "longer replies are split at paragraph or sentence ends into parts of at most this size",
    _integer(minimum=200, maximum=65000),
    group=W,
)

_KNOWN_KINDS = ("anthropic", "gemini", "openai", "offline")


@attrs.frozen(kw_only=True)
class ProviderDefaults:
    kind: str
    model: str
    base_url: str | None


# Names with defaults; any other name needs <NAME>_KIND.
PROVIDER_DEFAULTS: Mapping[str, ProviderDefaults] = {
    "anthropic": ProviderDefaults(
        kind="anthropic", model="claude-sonnet-4-5", base_url="https://api.anthropic.com"
    ),
    "gemini": ProviderDefaults(
        kind="gemini",
        model="gemini-2.5-flash",
        base_url="https://generativelanguage.googleapis.com",
    ),
    "openrouter": ProviderDefaults(
        kind="openai", model="openrouter/auto", base_url="https://openrouter.ai/api/v1"
    ),
    "glm": ProviderDefaults(
        kind="openai", model="glm-4.6", base_url="https://api.z.ai/api/paas/v4"
    ),
    "offline": ProviderDefaults(kind="offline", model="knowledge-base", base_url=None),
}


# -- the settings classes ------------------------------------------------------------
@attrs.frozen(kw_only=True)
class HttpSettings:
    host: str
    port: int
    max_body_bytes: int
    read_timeout_s: float
    graceful_timeout_s: float


@attrs.frozen(kw_only=True)
class LogSettings:
    level: str
    format: str


@attrs.frozen(kw_only=True)
class SupervisionSettings:
    max_restarts: int
    period_s: float
    backoff_initial_s: float
    backoff_max_s: float
    reset_after_s: float


@attrs.frozen(kw_only=True, repr=False)
class StoreSettings:
    data_dir: Path
    database_url: str | None
    redis_url: str | None
    pool_size: int
    command_timeout_s: float
    statement_timeout_s: float
    redis_timeout_s: float
    session_ttl_s: float
    retention_days: int

    def __repr__(self) -> str:
        return f"StoreSettings(data_dir={str(self.data_dir)!r}, postgres={self.database_url is not None}, redis={self.redis_url is not None})"


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """One configured provider: its name, adapter kind, model, endpoint and keys."""

    name: str
    kind: str
    model: str
    base_url: str | None
    keys: tuple[ApiKey, ...]
    timeout_s: float
    app_url: str | None = None
    app_title: str | None = None


@attrs.frozen(kw_only=True)
class BreakerSettings:
    window: int
    min_calls: int
    failure_rate: float
    consecutive: int
    open_s: float
    open_max_s: float


@attrs.frozen(kw_only=True)
class PoolSettings:
    providers: tuple[ProviderSettings, ...]
    turn_timeout_s: float
    attempt_timeout_s: float
    max_attempts: int
    max_tokens: int
    breaker: BreakerSettings
    credit_poll_s: float


@attrs.frozen(kw_only=True)
class ConversationSettings:
    config_dir: Path
    idle_s: float
    queue_size: int
    context_turns: int
    context_chars: int
    rate_per_min: float
    burst: int
    max_message_chars: int
    handoff_timeout_s: float
    staff_channel: Channel | None
    staff_chat_id: str | None
    session_ttl_s: float
    turn_timeout_s: float
    max_tokens: int


@attrs.frozen(kw_only=True, repr=False)
class TelegramSettings:
    bot_token: str
    mode: str
    webhook_url: str | None
    webhook_secret: str | None
    api_base_url: str
    poll_timeout_s: int
    max_connections: int

    def __repr__(self) -> str:
        return f"TelegramSettings(mode={self.mode!r}, api_base_url={self.api_base_url!r})"


@attrs.frozen(kw_only=True, repr=False)
class WahaSettings:
    url: str
    api_key: str | None
    session: str
    hmac_key: str | None
    allow_unsigned: bool
    timestamp_window_s: float
    allow_groups: bool
    typing_chars_per_s: float = 40.0
    typing_max_s: float = 4.0
    max_part_chars: int = 4000

    def __repr__(self) -> str:
        return f"WahaSettings(url={self.url!r}, session={self.session!r}, signed={self.hmac_key is not None})"


@attrs.frozen(kw_only=True)
class Settings:
    http: HttpSettings
    log: LogSettings
    supervision: SupervisionSettings
    store: StoreSettings
    pool: PoolSettings
    conversation: ConversationSettings
    telegram: TelegramSettings | None
    waha: WahaSettings | None
    drain_timeout_s: float
    config_dir: Path
    effective: tuple[tuple[str, str | None, bool], ...] = attrs.field(repr=False, eq=False)
    """(variable, value, is_secret) for ``concierge check``."""


# -- loading -----------------------------------------------------------------------------
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
            f"provider {name!r} has no defaults: set its kind, one of {', '.join(_KNOWN_KINDS)}",
        )
    kind = reader.parse(f"{prefix}_KIND", kind_raw, _choice(*_KNOWN_KINDS))
    model = reader.raw(f"{prefix}_MODEL") or (
        defaults.model if defaults and defaults.kind == kind else None
    )
    if model is None:
        raise SettingsError(f"{prefix}_MODEL", f"provider {name!r} needs a model name")
    base_url_raw = reader.raw(f"{prefix}_BASE_URL")
    base_url = (
        reader.parse(f"{prefix}_BASE_URL", base_url_raw, _url("https", "http"))
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
    timeout_raw = reader.raw(f"{prefix}_TIMEOUT_S")
    timeout_s = (
        reader.parse(f"{prefix}_TIMEOUT_S", timeout_raw, _number(strict=True))
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
    env: dict[str, str] = {}
    path = env_file if env_file is not None else Path(".env")
    if path.is_file():
        env.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    r = _Reader(env)

    http = HttpSettings(
        host=r.get("CONCIERGE_HTTP_HOST"),
        port=r.get("CONCIERGE_HTTP_PORT"),
        max_body_bytes=r.get("CONCIERGE_HTTP_MAX_BODY_BYTES"),
        read_timeout_s=r.get("CONCIERGE_HTTP_READ_TIMEOUT_S"),
        graceful_timeout_s=r.get("CONCIERGE_HTTP_GRACEFUL_TIMEOUT_S"),
    )
    log = LogSettings(level=r.get("CONCIERGE_LOG_LEVEL"), format=r.get("CONCIERGE_LOG_FORMAT"))
    supervision = SupervisionSettings(
        max_restarts=r.get("CONCIERGE_MAX_RESTARTS"),
        period_s=r.get("CONCIERGE_RESTART_PERIOD_S"),
        backoff_initial_s=r.get("CONCIERGE_BACKOFF_INITIAL_S"),
        backoff_max_s=r.get("CONCIERGE_BACKOFF_MAX_S"),
        reset_after_s=r.get("CONCIERGE_RESET_AFTER_S"),
    )
    config_dir = Path(r.get("CONCIERGE_CONFIG_DIR"))
    store = StoreSettings(
        data_dir=Path(r.get("CONCIERGE_DATA_DIR")),
        database_url=r.get("DATABASE_URL"),
        redis_url=r.get("REDIS_URL"),
        pool_size=r.get("CONCIERGE_DB_POOL_SIZE"),
        command_timeout_s=r.get("CONCIERGE_DB_COMMAND_TIMEOUT_S"),
        statement_timeout_s=r.get("CONCIERGE_DB_STATEMENT_TIMEOUT_S"),
        redis_timeout_s=r.get("CONCIERGE_REDIS_TIMEOUT_S"),
        session_ttl_s=r.get("CONCIERGE_SESSION_TTL_S"),
        retention_days=r.get("CONCIERGE_RETENTION_DAYS"),
    )
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
    pool = PoolSettings(
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
    staff_channel = r.get("CONCIERGE_STAFF_CHANNEL")
    staff_chat_id = r.get("CONCIERGE_STAFF_CHAT_ID")
    if (staff_channel is None) != (staff_chat_id is None):
        missing = "CONCIERGE_STAFF_CHAT_ID" if staff_chat_id is None else "CONCIERGE_STAFF_CHANNEL"
        raise SettingsError(
            missing,
            "staff notifications need both CONCIERGE_STAFF_CHANNEL and CONCIERGE_STAFF_CHAT_ID",
        )
    conversation = ConversationSettings(
        config_dir=config_dir,
        idle_s=r.get("CONCIERGE_CONVERSATION_IDLE_S"),
        queue_size=r.get("CONCIERGE_CONVERSATION_QUEUE"),
        context_turns=r.get("CONCIERGE_CONTEXT_TURNS"),
        context_chars=r.get("CONCIERGE_CONTEXT_CHARS"),
        rate_per_min=r.get("CONCIERGE_USER_RATE_PER_MIN"),
        burst=r.get("CONCIERGE_USER_BURST"),
        max_message_chars=r.get("CONCIERGE_MAX_MESSAGE_CHARS"),
        handoff_timeout_s=r.get("CONCIERGE_HANDOFF_TIMEOUT_S"),
        staff_channel=Channel(staff_channel) if staff_channel else None,
        staff_chat_id=staff_chat_id,
        session_ttl_s=store.session_ttl_s,
        turn_timeout_s=turn_timeout_s,
        max_tokens=max_tokens,
    )
    telegram = _telegram(r)
    waha = _waha(r)
    drain_timeout_s = r.get("CONCIERGE_DRAIN_TIMEOUT_S")
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
        drain_timeout_s=drain_timeout_s,
        config_dir=config_dir,
        effective=tuple((name, value, secret) for name, (value, secret) in r.seen.items()),
    )


def _telegram(r: _Reader) -> TelegramSettings | None:
    token = r.get("TELEGRAM_BOT_TOKEN")
    mode = r.get("TELEGRAM_MODE")
    webhook_url = r.get("TELEGRAM_WEBHOOK_URL")
    secret = r.get("TELEGRAM_WEBHOOK_SECRET")
    api_base_url = r.get("TELEGRAM_API_BASE_URL")
    poll_timeout_s = r.get("TELEGRAM_POLL_TIMEOUT_S")
    max_connections = r.get("TELEGRAM_MAX_CONNECTIONS")
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
    )


def _waha(r: _Reader) -> WahaSettings | None:
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
    )


# -- presenting ---------------------------------------------------------------------------
def mask(value: str | None, *, secret: bool) -> str:
    """Show enough of a secret to recognise it, never enough to use it."""
    if value is None:
        return "(unset)"
    if not secret:
        return value
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":***@")
        return value
    return "***" if len(value) < 12 else f"{value[:3]}***{value[-2:]}"


def describe(settings: Settings) -> Iterable[str]:
    """``NAME=value`` lines with secrets masked, for ``concierge check``."""
    for name, value, secret in sorted(settings.effective):
        if secret and name.endswith("_API_KEYS") and value:
            shown = ",".join(k.alias for k in parse_api_keys(value)) + " (secrets hidden)"
        else:
            shown = mask(value, secret=secret)
        yield f"{name}={shown}"


def env_example() -> str:
    """The text of ``config/concierge.env.example``, generated from ``OPTIONS``."""
    lines = [
        "# concierge settings: every option with its default.",
        "# Copy to .env (or set in the environment); real environment variables win.",
        "# Generated from concierge/settings.py: `concierge check --example` prints it.",
        "",
    ]
    group = None
    for option in OPTIONS.values():
        if option.group != group:
            group = option.group
            lines += [f"# --- {group} ---"]
        lines.append(f"# {option.doc}")
        lines.append(
            f"{'' if option.default is not None else '# '}{option.name}={option.default or ''}"
        )
    lines += [
        "",
        "# --- per provider: <NAME>_KIND, <NAME>_API_KEYS, <NAME>_MODEL, <NAME>_BASE_URL, <NAME>_TIMEOUT_S ---",
        "# Names with defaults: anthropic, gemini, openrouter (kind openai), glm (kind openai), offline.",
        "# Any other name needs <NAME>_KIND (anthropic, gemini, openai or offline).",
        "# Keys: comma-separated, optionally alias=key so logs show the alias.",
        "# ANTHROPIC_API_KEYS=main=sk-ant-...,backup=sk-ant-...",
        "# ANTHROPIC_MODEL=claude-sonnet-4-5",
        "# GEMINI_API_KEYS=AIza...",
        "# GEMINI_MODEL=gemini-2.5-flash",
        "# OPENROUTER_API_KEYS=sk-or-v1-...",
        "# OPENROUTER_MODEL=openrouter/auto",
        "# OPENROUTER_APP_URL=https://example.org   (HTTP-Referer attribution, optional)",
        "# OPENROUTER_APP_TITLE=Paroisse            (X-Title attribution, optional)",
        "# GLM_API_KEYS=...",
        "# GLM_BASE_URL=https://api.z.ai/api/paas/v4",
        "# <NAME>_TIMEOUT_S defaults to CONCIERGE_ATTEMPT_TIMEOUT_S",
        "",
    ]
    return "\n".join(lines)
