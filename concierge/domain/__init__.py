"""The concierge's own logic: what a message means and what to answer.

Triage, the knowledge base, prompts, fixed replies, languages, commands, the
context window, per-user limits, handoffs, and ingest (the one way a message
enters). It reaches data only through the store's interfaces and never imports
``actors`` or the application.
"""

from __future__ import annotations

from .commands import (
    Command as Command,
    ParsedCommand as ParsedCommand,
    parse_command as parse_command,
)
from .context import ContextWindow as ContextWindow
from .erasure import Forgotten as Forgotten, forget_user as forget_user
from .errors import ConfigError as ConfigError
from .handoffs import (
    HandoffDesk as HandoffDesk,
    close_handoff as close_handoff,
    staff_notice as staff_notice,
    sweep_handoffs as sweep_handoffs,
)
from .ingest import Ingest as Ingest
from .knowledge import (
    Hit as Hit,
    KnowledgeBase as KnowledgeBase,
    excerpt as excerpt,
    load_knowledge as load_knowledge,
)
from .language import (
    ENGLISH as ENGLISH,
    FRENCH as FRENCH,
    detect_language as detect_language,
)
from .prompts import PromptBook as PromptBook
from .ratelimit import UserRateLimiter as UserRateLimiter
from .replies import (
    Reply as Reply,
    reply_text as reply_text,
)
from .triage import (
    TriageRules as TriageRules,
    load_triage as load_triage,
)
