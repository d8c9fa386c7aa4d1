"""Records the store tests write: a reply and an interaction as a turn produces them."""

from __future__ import annotations

from concierge.protocol import Channel, Interaction, NewOutbound, ServiceType, utcnow


def reply(text: str, *, inbox_id: int | None = None, user: str = "telegram:111") -> NewOutbound:
    return NewOutbound(
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
