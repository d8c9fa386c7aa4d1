"""Records as tests build them: replies, interactions and history as turns produce them,
and an outbox row as the store hands it to a sender."""

from __future__ import annotations

from collections.abc import Sequence

from concierge.protocol import (
    Channel,
    InboundMessage,
    Interaction,
    OutboundReply,
    OutboxRow,
    ServiceType,
    TurnRecord,
    utcnow,
)
from concierge.store import Store


def reply(text: str, *, inbox_id: int | None = None, user: str = "telegram:111") -> OutboundReply:
    return OutboundReply(
        correlation_id=f"cid-{text}",
        channel=Channel.TELEGRAM,
        user_key=user,
        chat_id=user.partition(":")[2],
        text=text,
        inbox_id=inbox_id,
    )


def interaction(
    conversation_id: int,
    correlation_id: str,
    *,
    service_type: ServiceType = ServiceType.CATECHESE,
) -> Interaction:
    return Interaction(
        correlation_id=correlation_id,
        conversation_id=conversation_id,
        provider="anthropic",
        model="claude",
        key_alias="#1",
        latency_s=0.8,
        tokens_in=120,
        tokens_out=40,
        outcome="ok",
        service_type=service_type,
        created_at=utcnow(),
    )


async def record_history(
    store: Store,
    conversation_id: int,
    texts: Sequence[str],
    *,
    user: str = "telegram:111",
    service_type: ServiceType = ServiceType.CATECHESE,
    conversation_type: ServiceType | None = None,
) -> list[int]:
    """Record ``texts`` as a conversation's messages, the user's and the reply's in turn.

    As a conversation writes them: each exchange is an inbox row that ``complete_turn``
    answers (an odd last text is a message left unanswered, as during a handoff).
    ``conversation_type``, when given, is set on the conversation by the first turn.
    Returns the inbox ids, all processed.
    """
    inbox_ids: list[int] = []
    for n in range(0, len(texts), 2):
        accepted = await store.accept(
            InboundMessage(
                correlation_id=f"history-{conversation_id}-{n}",
                channel=Channel.TELEGRAM,
                user_key=user,
                chat_id=user.partition(":")[2],
                external_id=f"history-{conversation_id}-{n}",
                text=texts[n],
                received_at=utcnow(),
            )
        )
        await store.complete_turn(
            TurnRecord(
                inbox_id=accepted.inbox_id,
                conversation_id=conversation_id,
                correlation_id=f"history-{conversation_id}-{n}",
                service_type=service_type,
                inbound_text=texts[n],
                outbound_text=texts[n + 1] if n + 1 < len(texts) else None,
                conversation_type=conversation_type if n == 0 else None,
            )
        )
        inbox_ids.append(accepted.inbox_id)
    return inbox_ids


def outbox_row(
    channel: Channel,
    chat_id: str,
    text: str,
    *,
    outbox_id: int = 1,
    last_error: str | None = None,
) -> OutboxRow:
    """An unsent row, due now, never tried (``last_error`` says how an earlier try ended)."""
    now = utcnow()
    return OutboxRow(
        outbox_id=outbox_id,
        correlation_id=f"cid-{outbox_id}",
        channel=channel,
        user_key=f"{channel.value}:{chat_id}",
        chat_id=chat_id,
        text=text,
        inbox_id=None,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        last_error=last_error,
    )
