"""Conversions between records: every shared field carried, what a conversion adds given."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from concierge.protocol import (
    AttemptFailure,
    Channel,
    Completion,
    CompletionFailed,
    Inbound,
    InboundKind,
    InboundMessage,
    Interaction,
    OutboundReply,
    Outcome,
    ProviderReply,
    ServiceType,
    TurnEnded,
    TurnStarted,
    utcnow,
)
from concierge.protocol.convert import converter

MESSAGE = InboundMessage(
    correlation_id="cid-1",
    channel=Channel.WAHA,
    user_key="waha:221770000000@c.us",
    chat_id="221770000000@c.us",
    external_id="wamid-1",
    text="Bonjour",
    kind=InboundKind.COMMAND,
    received_at=utcnow() - timedelta(seconds=3),
    display_name="Marie",
    language_hint="fr",
)


def test_a_committed_message_keeps_every_field_and_gains_its_inbox_id() -> None:
    inbound = Inbound.committed(MESSAGE, inbox_id=7)
    assert type(inbound) is Inbound
    assert attrs.asdict(inbound) == {**attrs.asdict(MESSAGE), "inbox_id": 7}


def test_a_reply_goes_to_the_chat_of_the_message_it_answers() -> None:
    reply = OutboundReply.answering(
        Inbound.committed(MESSAGE, inbox_id=7), text="La messe est à 10h"
    )
    assert reply == OutboundReply(
        correlation_id="cid-1",
        channel=Channel.WAHA,
        user_key="waha:221770000000@c.us",
        chat_id="221770000000@c.us",
        text="La messe est à 10h",
        inbox_id=7,
    )


def test_typing_shows_in_the_chat_of_the_message_being_answered() -> None:
    inbound = Inbound.committed(MESSAGE, inbox_id=7)
    expected = {"channel": Channel.WAHA, "chat_id": "221770000000@c.us", "correlation_id": "cid-1"}
    assert attrs.asdict(TurnStarted.of(inbound)) == expected
    assert attrs.asdict(TurnEnded.of(inbound)) == expected
    assert type(TurnEnded.of(inbound)) is TurnEnded


def test_an_answer_carries_the_reply_and_who_gave_it_into_the_interaction() -> None:
    reply = ProviderReply(text="10h", model="claude", tokens_in=120, tokens_out=40)
    completion = Completion.answered(
        reply,
        correlation_id="cid-1",
        provider="anthropic",
        key_alias="#2",
        latency_s=0.8,
        attempts=2,
    )
    assert completion == Completion(
        correlation_id="cid-1",
        text="10h",
        provider="anthropic",
        model="claude",
        key_alias="#2",
        latency_s=0.8,
        tokens_in=120,
        tokens_out=40,
        attempts=2,
    )
    before = utcnow()
    interaction = Interaction.of(
        completion, conversation_id=3, outcome="ok", service_type=ServiceType.CATECHESE
    )
    assert attrs.asdict(interaction) == {
        "correlation_id": "cid-1",
        "conversation_id": 3,
        "provider": "anthropic",
        "model": "claude",
        "key_alias": "#2",
        "latency_s": 0.8,
        "tokens_in": 120,
        "tokens_out": 40,
        "outcome": "ok",
        "service_type": ServiceType.CATECHESE,
        "created_at": interaction.created_at,
    }
    assert before <= interaction.created_at <= utcnow()


def test_a_turn_nobody_answered_records_the_last_provider_tried() -> None:
    failed = CompletionFailed(
        correlation_id="cid-1",
        reason="timeout",
        failures=(
            AttemptFailure(
                provider="anthropic", key_alias="#1", outcome=Outcome.TRANSIENT, detail="503"
            ),
            AttemptFailure(
                provider="gemini", key_alias="#3", outcome=Outcome.THROTTLED, detail="429"
            ),
        ),
    )
    interaction = Interaction.of(
        failed, conversation_id=3, outcome="failed", service_type=ServiceType.RENSEIGNEMENT
    )
    assert (interaction.correlation_id, interaction.provider, interaction.key_alias) == (
        "cid-1",
        "gemini",
        "#3",
    )
    assert (
        interaction.model,
        interaction.latency_s,
        interaction.tokens_in,
        interaction.outcome,
    ) == (
        "",
        0.0,
        0,
        "failed",
    )
    nobody = Interaction.of(
        CompletionFailed(correlation_id="cid-2", reason="no provider"),
        conversation_id=3,
        outcome="failed",
        service_type=ServiceType.RENSEIGNEMENT,
    )
    assert (nobody.provider, nobody.key_alias) == ("", "")


def test_what_a_conversion_gives_wins_over_a_shared_field() -> None:
    retext = converter(InboundMessage, InboundMessage, "text")
    assert retext(MESSAGE, text="Bonsoir") == attrs.evolve(MESSAGE, text="Bonsoir")


def test_a_conversion_that_leaves_a_required_field_unset_is_refused_when_made() -> None:
    with pytest.raises(
        TypeError, match=r"OutboundReply -> Inbound: nothing gives \['external_id', 'received_at'\]"
    ):
        converter(OutboundReply, Inbound)
