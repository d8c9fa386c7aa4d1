"""Every option, declared once: name, default, meaning and parser.

Validation, ``concierge check`` and ``config/concierge.env.example`` all read
``OPTIONS``, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from concierge.settings.parsers import (
    boolean,
    choice,
    integer,
    jwt_keys,
    number,
    provider_names,
    text,
    url,
)

T = TypeVar("T")


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
    parse: Callable[[str], Any] = text,
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
    integer(maximum=65535),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_MAX_BODY_BYTES",
    "1048576",
    "largest request body accepted (413 above)",
    integer(minimum=1024),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_READ_TIMEOUT_S",
    "10",
    "seconds a client may take to send its request",
    number(strict=True),
    group=H,
)
_opt(
    "CONCIERGE_HTTP_GRACEFUL_TIMEOUT_S",
    "5",
    "seconds in-flight requests get at shutdown",
    number(),
    group=H,
)
G = "general"
_opt("CONCIERGE_DATA_DIR", "./var", "where the embedded SQLite store lives", group=G)
_opt(
    "CONCIERGE_CONFIG_DIR",
    None,
    "knowledge, prompts and triage rules; unset uses the defaults shipped in the package "
    "(`concierge init DIR` writes an editable copy)",
    group=G,
)
_opt(
    "CONCIERGE_LOG_LEVEL",
    "info",
    "debug, info, warning or error",
    choice("debug", "info", "warning", "error"),
    group=G,
)
_opt(
    "CONCIERGE_LOG_FORMAT",
    "auto",
    "json, console, or auto (console on a TTY, JSON otherwise)",
    choice("json", "console", "auto"),
    group=G,
)
_opt(
    "CONCIERGE_DRAIN_TIMEOUT_S",
    "20",
    "seconds the turns in flight and the outbox get to finish after SIGTERM",
    number(strict=True),
    group=G,
)
_opt(
    "CONCIERGE_DRAIN_NOTICE_S",
    "0",
    "seconds /readyz fails before the listener may close (a proxy's health-check interval, or more)",
    number(),
    group=G,
)
S = "supervision"
_opt(
    "CONCIERGE_MAX_RESTARTS",
    "5",
    "restarts a supervisor allows within the period before giving up",
    integer(),
    group=S,
)
_opt(
    "CONCIERGE_RESTART_PERIOD_S",
    "60",
    "the restart-intensity window in seconds",
    number(strict=True),
    group=S,
)
_opt(
    "CONCIERGE_BACKOFF_INITIAL_S",
    "0.5",
    "first restart delay; doubles per restart",
    number(),
    group=S,
)
_opt("CONCIERGE_BACKOFF_MAX_S", "30", "longest restart delay", number(), group=S)
_opt(
    "CONCIERGE_RESET_AFTER_S",
    "60",
    "a child up this long gets its backoff reset",
    number(),
    group=S,
)
D = "stores"
_opt(
    "DATABASE_URL",
    None,
    "PostgreSQL DSN; unset uses SQLite in the data dir",
    url("postgres", "postgresql"),
    secret=True,
    group=D,
)
_opt(
    "REDIS_URL",
    None,
    "Redis URL; unset uses an in-memory session cache",
    url("redis", "rediss"),
    secret=True,
    group=D,
)
_opt(
    "CONCIERGE_DB_POOL_SIZE",
    "5",
    "PostgreSQL connections in the pool",
    integer(minimum=1, maximum=100),
    group=D,
)
_opt(
    "CONCIERGE_DB_COMMAND_TIMEOUT_S",
    "5",
    "client-side timeout of one PostgreSQL command",
    number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_DB_STATEMENT_TIMEOUT_S",
    "5",
    "server-side statement_timeout",
    number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_REDIS_TIMEOUT_S",
    "0.5",
    "timeout of one Redis command",
    number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_SESSION_TTL_S",
    "604800",
    "how long a cached context window lives",
    number(strict=True),
    group=D,
)
_opt(
    "CONCIERGE_RETENTION_DAYS",
    "90",
    "message texts older than this are erased (0 keeps them)",
    integer(),
    group=D,
)
_opt(
    "CONCIERGE_REPLICA_ID",
    None,
    "this replica's name in leases and claims (PostgreSQL); unset uses host name and process id",
    group=D,
)
_opt(
    "CONCIERGE_LEASE_TTL_S",
    "10",
    "a conversation lease's life without renewal: how soon a dead replica's users are taken over",
    number(strict=True),
    group=D,
)
P = "providers"
_opt(
    "CONCIERGE_PROVIDERS",
    "offline",
    "providers in the order they are tried, e.g. anthropic,gemini,openrouter,offline",
    provider_names,
    group=P,
)
_opt(
    "CONCIERGE_TURN_TIMEOUT_S",
    "30",
    "one deadline per turn covering every attempt",
    number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_ATTEMPT_TIMEOUT_S",
    "20",
    "the longest one provider attempt may take",
    number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_MAX_ATTEMPTS",
    "3",
    "provider attempts per turn at most",
    integer(minimum=1, maximum=10),
    group=P,
)
_opt("CONCIERGE_MAX_TOKENS", "800", "reply length cap in tokens", integer(minimum=16), group=P)
_opt(
    "CONCIERGE_BREAKER_WINDOW",
    "20",
    "recent calls the breaker's failure rate looks at",
    integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_MIN_CALLS",
    "5",
    "calls in the window before the rate can open the breaker",
    integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_FAILURE_RATE",
    "0.5",
    "transient-failure rate that opens the breaker",
    number(strict=True),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_CONSECUTIVE",
    "5",
    "consecutive transient failures that open the breaker",
    integer(minimum=1),
    group=P,
)
_opt(
    "CONCIERGE_BREAKER_OPEN_S",
    "30",
    "first open duration; grows with consecutive openings",
    number(strict=True),
    group=P,
)
_opt("CONCIERGE_BREAKER_OPEN_MAX_S", "300", "longest open duration", number(strict=True), group=P)
_opt(
    "CONCIERGE_PROVIDER_DAILY_TOKENS",
    "5000000",
    "tokens one network provider may use per UTC day, then the next one (or the knowledge "
    "base) answers; <NAME>_DAILY_TOKENS sets one provider's; 0 is no budget",
    integer(),
    group=P,
)
_opt(
    "CONCIERGE_CREDIT_POLL_S",
    "300",
    "how often OpenRouter key credit is polled",
    number(strict=True),
    group=P,
)
C = "conversations"
_opt(
    "CONCIERGE_CONVERSATION_IDLE_S",
    "900",
    "an idle conversation actor ends after this (its context stays)",
    number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_CONVERSATION_QUEUE",
    "4",
    "messages one user may have waiting before 'one moment' replies",
    integer(minimum=1, maximum=64),
    group=C,
)
_opt(
    "CONCIERGE_MAX_TURNS",
    "256",
    "turns worked on at once, at most; more messages wait in the durable inbox",
    integer(minimum=1, maximum=10000),
    group=C,
)
_opt(
    "CONCIERGE_LOOP_LAG_TARGET_S",
    "0.02",
    "event-loop lag above which fewer turns are admitted, so webhooks are still answered fast",
    number(strict=True),
    group=C,
)
_opt("CONCIERGE_CONTEXT_TURNS", "12", "context window size in turns", integer(minimum=0), group=C)
_opt(
    "CONCIERGE_CONTEXT_CHARS",
    "6000",
    "context window size in characters",
    integer(minimum=0),
    group=C,
)
_opt(
    "CONCIERGE_USER_RATE_PER_MIN",
    "6",
    "messages per minute one user may send (token bucket rate)",
    number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_USER_BURST",
    "5",
    "messages one user may send at once (token bucket size)",
    integer(minimum=1),
    group=C,
)
_opt(
    "CONCIERGE_USER_DAILY_TOKENS",
    "60000",
    "tokens one person may use per UTC day (providers' reported usage); past it they are "
    "answered from the knowledge base with a notice; 0 is no budget",
    integer(),
    group=C,
)
_opt(
    "CONCIERGE_MAX_MESSAGE_CHARS",
    "2000",
    "longer messages are refused with the limit",
    integer(minimum=1),
    group=C,
)
_opt(
    "CONCIERGE_HANDOFF_TIMEOUT_S",
    "86400",
    "an open handoff closes by itself after this",
    number(strict=True),
    group=C,
)
_opt(
    "CONCIERGE_STAFF_CHANNEL",
    None,
    "channel staff notifications go to (telegram or waha)",
    choice("telegram", "waha"),
    group=C,
)
_opt(
    "CONCIERGE_STAFF_CHAT_ID",
    None,
    "the staff chat: a Telegram group id (negative) or a WhatsApp group (...@g.us); "
    "handoff notices go there and staff answer users from it",
    group=C,
)
A = "operator API"
_opt(
    "CONCIERGE_JWT_KEYS",
    None,
    "operator API signing keys, kid=secret,... (HS256, each at least 32 bytes; the first "
    "signs, all verify); unset turns the API and the console off",
    jwt_keys,
    secret=True,
    group=A,
)
_opt("CONCIERGE_JWT_ISSUER", "concierge", "the iss claim tokens must carry", group=A)
_opt("CONCIERGE_JWT_AUDIENCE", "concierge-api", "the aud claim tokens must carry", group=A)
T_ = "telegram"
_opt(
    "TELEGRAM_BOT_TOKEN",
    None,
    "bot token from @BotFather; unset turns Telegram off",
    secret=True,
    group=T_,
)
_opt("TELEGRAM_MODE", "polling", "polling or webhook", choice("polling", "webhook"), group=T_)
_opt(
    "TELEGRAM_WEBHOOK_URL",
    None,
    "public HTTPS URL of POST /webhooks/telegram (webhook mode)",
    url("https", "http"),
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
    url("https", "http"),
    group=T_,
)
_opt(
    "TELEGRAM_POLL_TIMEOUT_S",
    "50",
    "getUpdates long-poll timeout (at most 50)",
    integer(minimum=1, maximum=50),
    group=T_,
)
_opt(
    "TELEGRAM_MAX_CONNECTIONS",
    "40",
    "setWebhook max_connections",
    integer(minimum=1, maximum=100),
    group=T_,
)
_opt(
    "TELEGRAM_SEND_RATE_PER_S",
    "30",
    "messages per second the bot sends overall (Telegram's limit is about 30; "
    "up to 1000 for a bot with paid broadcasts enabled)",
    number(strict=True, maximum=1000),
    group=T_,
)
_opt(
    "TELEGRAM_CHAT_INTERVAL_S",
    "1",
    "seconds between two messages to the same chat (Telegram: about one per second)",
    number(),
    group=T_,
)
W = "waha"
_opt("WAHA_URL", None, "WAHA base URL; unset turns WhatsApp off", url("https", "http"), group=W)
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
    boolean,
    group=W,
)
_opt(
    "WAHA_TIMESTAMP_WINDOW_S",
    "600",
    "oldest WAHA event accepted, by the timestamp inside its signed body (covers WAHA's retries)",
    number(strict=True),
    group=W,
)
_opt("WAHA_ALLOW_GROUPS", "false", "answer messages in WhatsApp groups", boolean, group=W)
_opt(
    "WAHA_TYPING_CHARS_PER_S",
    "40",
    "simulated typing speed: the 'typing...' pause before a reply grows with its length",
    number(strict=True),
    group=W,
)
_opt(
    "WAHA_TYPING_MAX_S",
    "4",
    "longest 'typing...' pause before one reply part (0 sends at once)",
    number(),
    group=W,
)
_opt(
    "WAHA_SEND_RATE_PER_S",
    "5",
    "replies per second sent to WhatsApp overall (WhatsApp bans accounts that send in bursts)",
    number(strict=True, maximum=1000),
    group=W,
)
_opt(
    "WAHA_CHAT_INTERVAL_S",
    "2",
    "seconds between two replies to the same WhatsApp chat",
    number(),
    group=W,
)
_opt(
    "WAHA_MAX_PART_CHARS",
    "4000",
    "longer replies are split at paragraph or sentence ends into parts of at most this size",
    integer(minimum=200, maximum=65000),
    group=W,
)

KNOWN_KINDS = ("anthropic", "gemini", "openai", "offline")


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
