"""Everything that crosses a module boundary, defined once.

``messages``: what actors send each other (one inbox type per actor) and the values
they carry; ``records``: what the durable store reads and writes. Frozen,
keyword-only attrs classes with immutable payloads.
"""

from __future__ import annotations

from .messages import (
    AttemptFailure as AttemptFailure,
    Channel as Channel,
    Completion as Completion,
    CompletionFailed as CompletionFailed,
    CompletionRequest as CompletionRequest,
    CompletionResult as CompletionResult,
    ConversationMsg as ConversationMsg,
    Inbound as Inbound,
    InboundKind as InboundKind,
    OutboxMsg as OutboxMsg,
    OutboxNudge as OutboxNudge,
    Outcome as Outcome,
    PresenceMsg as PresenceMsg,
    ProviderPoolMsg as ProviderPoolMsg,
    Role as Role,
    RouterMsg as RouterMsg,
    ServiceType as ServiceType,
    Turn as Turn,
    TurnCompleted as TurnCompleted,
    TurnEnded as TurnEnded,
    TurnStarted as TurnStarted,
    new_correlation_id as new_correlation_id,
    utcnow as utcnow,
)
from .records import (
    Accepted as Accepted,
    AcceptStatus as AcceptStatus,
    ConversationRow as ConversationRow,
    ConversationStart as ConversationStart,
    Direction as Direction,
    HandoffRow as HandoffRow,
    HandoffState as HandoffState,
    InboxRow as InboxRow,
    Interaction as Interaction,
    NewInbound as NewInbound,
    NewOutbound as NewOutbound,
    OutboxRow as OutboxRow,
    TurnRecord as TurnRecord,
    UserRow as UserRow,
)
