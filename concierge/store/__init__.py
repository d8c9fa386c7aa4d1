"""Durable records (SQLite, PostgreSQL) and the session cache (memory, Redis).

Callers type what they hold by the interfaces in ``roles``: the durable store is cut
into the roles its callers have (``Inbox``, ``Turns``, ``Conversations``,
``Handoffs``, ``Outbox``, ``Identities``, ``Persons``, ``Cursors``, ``Erasure``,
``OperatorQueries``, ``Audit``, ``Health``), and
each actor, adapter and domain function asks for the narrowest it needs, so what
one can touch is in its signature. ``Store``, every role at once, is what the
backends implement and the composition root holds. ``open_store`` and
``open_session_cache`` pick the backend from the settings.
"""

from __future__ import annotations

from .cache import open_session_cache as open_session_cache
from .cache_rules import (
    BucketState as BucketState,
    refill_and_take as refill_and_take,
)
from .connect import (
    migrate as migrate,
    open_store as open_store,
)
from .erasure_keys import erasure_digest as erasure_digest
from .errors import (
    CacheUnavailable as CacheUnavailable,
    StoreError as StoreError,
    StoreUnavailable as StoreUnavailable,
    UnknownUser as UnknownUser,
)
from .monitor import (
    Monitor as Monitor,
    run_monitor as run_monitor,
)
from .roles import (
    Audit as Audit,
    Conversations as Conversations,
    Cursors as Cursors,
    Erasure as Erasure,
    Handoffs as Handoffs,
    Health as Health,
    Identities as Identities,
    Inbox as Inbox,
    OperatorQueries as OperatorQueries,
    Outbox as Outbox,
    Persons as Persons,
    SessionCache as SessionCache,
    Store as Store,
    Turns as Turns,
    Usage as Usage,
)
