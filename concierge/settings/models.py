"""The settings classes: one small frozen class per part of the daemon.

An actor gets the class for its part, never the whole ``Settings``.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from concierge.protocol import Channel


@attrs.frozen(kw_only=True, repr=False)
class ApiKey:
    """A key and the alias logs and metrics show instead of it."""

    alias: str
    secret: str

    def __repr__(self) -> str:
        return f"ApiKey(alias={self.alias!r})"


@attrs.frozen(kw_only=True, repr=False)
class JwtKey:
    """One operator API signing key: ``kid`` names it in a token's header."""

    kid: str
    secret: bytes

    def __repr__(self) -> str:
        return f"JwtKey(kid={self.kid!r})"


@attrs.frozen(kw_only=True)
class ApiSettings:
    """The operator API: off without keys; the first key signs, every key verifies."""

    keys: tuple[JwtKey, ...]
    issuer: str
    audience: str

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


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
    replica_id: str = "local"
    """This process's name in conversation leases and outbox claims (PostgreSQL)."""
    lease_ttl_s: float = 10.0

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
    daily_tokens: int = 0
    """Tokens this provider may use per UTC day (0: no budget)."""


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
    user_daily_tokens: int = 0
    """Tokens one person may use per UTC day (0: no budget)."""
    max_turns: int = 256
    """Turns in flight at most (``TurnGate``); the event-loop lag may admit fewer."""
    loop_lag_target_s: float = 0.02


@attrs.frozen(kw_only=True, repr=False)
class TelegramSettings:
    bot_token: str
    mode: str
    webhook_url: str | None
    webhook_secret: str | None
    api_base_url: str
    poll_timeout_s: int
    max_connections: int
    send_rate_per_s: float = 30.0
    chat_interval_s: float = 1.0

    staff_chat_id: str | None = None
    """The staff chat on Telegram (``CONCIERGE_STAFF_CHAT_ID`` when staff use Telegram)."""

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
    send_rate_per_s: float = 5.0
    chat_interval_s: float = 2.0
    staff_chat_id: str | None = None
    """The staff group on WhatsApp (``CONCIERGE_STAFF_CHAT_ID`` when staff use WAHA)."""

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
    api: ApiSettings
    drain_timeout_s: float
    drain_notice_s: float
    """How long readiness fails before the listener closes: load balancers must see it."""
    config_dir: Path
    effective: tuple[tuple[str, str | None, bool], ...] = attrs.field(repr=False, eq=False)
    """(variable, value, is_secret) for ``concierge check``."""
