"""Shape a call's context window into the strict user/assistant alternation chat APIs expect."""

from __future__ import annotations

from concierge.protocol import Outcome, ProviderCall, Role, Turn
from concierge.providers.errors import ProviderError


def chat_turns(call: ProviderCall) -> tuple[Turn, ...]:
    """Turns to send: leading assistant turns dropped, same-role neighbours merged.

    A window cut from a longer conversation can start with the assistant, and a user
    who wrote twice leaves two user turns; several APIs refuse both. With no turns the
    query alone is sent. Nothing to send at all is the caller's error.
    """
    merged: list[Turn] = []
    for turn in call.turns:
        if not turn.text.strip():
            continue
        if not merged and turn.role is not Role.USER:
            continue
        if merged and merged[-1].role is turn.role:
            merged[-1] = Turn(role=turn.role, text=f"{merged[-1].text}\n\n{turn.text}")
        else:
            merged.append(turn)
    if not merged and call.query.strip():
        merged.append(Turn(role=Role.USER, text=call.query))
    if not merged:
        raise ProviderError(Outcome.REQUEST_ERROR, "nothing to send: no user turn and no query")
    return tuple(merged)
