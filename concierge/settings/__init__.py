"""The daemon's settings: one frozen class per part, read and validated once.

    settings = load_settings()        # environment and ./.env; SettingsError names the variable
    settings.conversation             # the part an actor gets, never the whole

Every option is declared once in ``options.OPTIONS``; ``config/concierge.env.example``
is generated from it.
"""

from __future__ import annotations

from .errors import SettingsError as SettingsError
from .loader import load_settings as load_settings
from .models import (
    ApiKey as ApiKey,
    ApiSettings as ApiSettings,
    BreakerSettings as BreakerSettings,
    ConversationSettings as ConversationSettings,
    HttpSettings as HttpSettings,
    JwtKey as JwtKey,
    PoolSettings as PoolSettings,
    ProviderSettings as ProviderSettings,
    Settings as Settings,
    StoreSettings as StoreSettings,
    SupervisionSettings as SupervisionSettings,
    TelegramSettings as TelegramSettings,
    WahaSettings as WahaSettings,
)
from .paths import DEFAULT_CONFIG_DIR as DEFAULT_CONFIG_DIR
from .presenting import (
    describe as describe,
    env_example as env_example,
)
from .secrets import secrets_of as secrets_of
