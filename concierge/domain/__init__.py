"""The concierge's own logic: what a message means and what to answer.

Distress detection and the community's emergency numbers, triage, the knowledge base, prompts, fixed replies, languages, small talk,
commands, the context window, per-user limits, handoffs and the staff desk (what
operators do, from the API or the staff chat), and ingest (the one way a message
enters). It reaches data only through the store's interfaces and never imports
``actors`` or the application.
"""

from __future__ import annotations

from .admission import Admission as Admission
from .budget import (
    DailyTokens as DailyTokens,
    UserBudget as UserBudget,
    utc_today as utc_today,
)
from .commands import (
    Command as Command,
    ParsedCommand as ParsedCommand,
    parse_command as parse_command,
)
from .community import (
    Community as Community,
    CommunityError as CommunityError,
    load_community as load_community,
)
from .context import ContextWindow as ContextWindow
from .desk import (
    Desk as Desk,
    DeskStore as DeskStore,
    HandoffPage as HandoffPage,
    Operator as Operator,
    record_action as record_action,
)
from .distress import (
    Distress as Distress,
    DistressKind as DistressKind,
    DistressRules as DistressRules,
    read_judgement as read_judgement,
)
from .erasure import (
    Forgotten as Forgotten,
    forget_user as forget_user,
    user_of_entry as user_of_entry,
)
from .errors import (
    ConfigError as ConfigError,
    DeskError as DeskError,
    HandoffNotActive as HandoffNotActive,
    HandoffTaken as HandoffTaken,
    LinkRefused as LinkRefused,
    MergeAbandoned as MergeAbandoned,
    NoSuchHandoff as NoSuchHandoff,
)
from .handoffs import (
    HandoffDesk as HandoffDesk,
    OpenHandoffs as OpenHandoffs,
    close_handoff as close_handoff,
    open_handoffs as open_handoffs,
    sweep_handoffs as sweep_handoffs,
)
from .ingest import Ingest as Ingest
from .knowledge import (
    Hit as Hit,
    KnowledgeBase as KnowledgeBase,
    load_knowledge as load_knowledge,
)
from .language import (
    LanguagePack as LanguagePack,
    Languages as Languages,
)
from .language_files import load_languages as load_languages
from .linking import (
    Linking as Linking,
    LinkSettings as LinkSettings,
    Redeemed as Redeemed,
    Verdict as Verdict,
    channel_name as channel_name,
    code_in as code_in,
)
from .merging import (
    LivePersons as LivePersons,
    MergeStore as MergeStore,
)
from .nudges import (
    nudge_outbox as nudge_outbox,
    offer as offer,
)
from .people import People as People, Tenure as Tenure
from .prompts import Prompt as Prompt, PromptBook as PromptBook
from .ratelimit import UserRateLimiter as UserRateLimiter
from .replies import (
    OfflineText as OfflineText,
    Reply as Reply,
)
from .sections import (
    Passage as Passage,
    Section as Section,
)
from .smalltalk import SmallTalk as SmallTalk
from .staff_chat import handle_staff_message as handle_staff_message
from .staff_commands import (
    StaffAction as StaffAction,
    StaffCommand as StaffCommand,
    parse_staff_command as parse_staff_command,
)
from .staff_notices import (
    StaffChat as StaffChat,
    staff_forward as staff_forward,
    staff_notice as staff_notice,
)
from .triage import (
    TriageResult as TriageResult,
    TriageRules as TriageRules,
    load_triage as load_triage,
)
