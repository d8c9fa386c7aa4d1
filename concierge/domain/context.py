"""The context window: which past turns of a conversation go into the next prompt.

The session cache holds the window; when it lost it (flushed, restarted, down)
the window is rebuilt from the messages the store recorded, ignoring everything
before the user's last ``/reset`` and the commands with their fixed replies.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import structlog

from concierge.domain.commands import is_reset, parse_command
from concierge.protocol import Role, Turn
from concierge.store import CacheUnavailable, Conversations, SessionCache

log = structlog.get_logger(__name__)


def trim_context(turns: Sequence[Turn], *, max_turns: int, max_chars: int) -> tuple[Turn, ...]:
    """The newest turns that fit both bounds (at most ``max_turns``, ``max_chars`` in all)."""
    if max_turns <= 0 or max_chars <= 0:
        return ()
    kept: list[Turn] = []
    total = 0
    for turn in reversed(turns[-max_turns:]):
        total += len(turn.text)
        if total > max_chars:
            break
        kept.append(turn)
    kept.reverse()
    return tuple(kept)


def context_from_history(turns: Sequence[Turn]) -> list[Turn]:
    """Recorded messages as a context window: nothing before the last ``/reset``, no commands.

    A command and the fixed reply right after it carry nothing the model needs.
    """
    start = 0
    for i, turn in enumerate(turns):
        if turn.role is Role.USER and is_reset(turn.text):
            start = i  # the reset itself is a command: skipped below with its reply
    kept: list[Turn] = []
    skip_reply = False
    for turn in turns[start:]:
        if turn.role is Role.USER:
            skip_reply = parse_command(turn.text) is not None
            if not skip_reply:
                kept.append(turn)
        elif skip_reply:
            skip_reply = False
        else:
            kept.append(turn)
    return kept


@attrs.frozen(kw_only=True)
class ContextWindow:
    """Reads, extends and clears users' windows on the cache, with the store as the fallback."""

    cache: SessionCache
    store: Conversations
    max_turns: int
    max_chars: int
    ttl_s: float

    @property
    def history_limit(self) -> int:
        """How many recorded messages a rebuild reads (commands and their replies drop out)."""
        return 2 * self.max_turns + 4

    async def load(
        self, user_key: str, conversation_id: int, *, recorded: Sequence[Turn] | None = None
    ) -> tuple[Turn, ...]:
        """The window for the next prompt: the cache's, or rebuilt from the store.

        ``recorded``: the conversation's last ``history_limit`` messages when the caller
        read them already (as ``Conversations.recent_turns``, nothing written since); a rebuild
        then uses them instead of reading again.
        """
        turns: Sequence[Turn] | None
        try:
            turns = await self.cache.get_context(user_key)
        except CacheUnavailable:
            log.warning("conversation.cache_unavailable", operation="get_context")
            turns = None
        if turns is None:
            if recorded is None:
                recorded = await self.store.recent_turns(conversation_id, limit=self.history_limit)
            rebuilt = context_from_history(recorded)
            turns = rebuilt[-self.max_turns :] if self.max_turns else []
            log.debug("conversation.context_rebuilt", turns=len(turns))
            try:
                await self.cache.set_context(user_key, turns, ttl_s=self.ttl_s)
            except CacheUnavailable:
                pass
        return trim_context(turns, max_turns=self.max_turns, max_chars=self.max_chars)

    async def remember(self, user_key: str, question: str, answer: str) -> None:
        """Append one exchange (the cache trims to ``max_turns``)."""
        exchange = (Turn(role=Role.USER, text=question), Turn(role=Role.ASSISTANT, text=answer))
        try:
            await self.cache.append_context(
                user_key, exchange, max_turns=self.max_turns, ttl_s=self.ttl_s
            )
        except CacheUnavailable:
            log.warning("conversation.cache_unavailable", operation="append_context")

    async def clear(self, user_key: str) -> None:
        try:
            await self.cache.clear_context(user_key)
        except CacheUnavailable:
            log.warning("conversation.cache_unavailable", operation="clear_context")
