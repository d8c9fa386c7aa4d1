"""The first messages of a conversation actor that is starting, passed to it at start.

The router does not wait for an actor to start (one slow start would hold up every
other user); it queues the user's messages in a ``Handover`` that the actor takes
as its very first act, registering its own queue in the same step. Nothing can
arrive in between, so nothing is lost or reordered. A handover is taken once: a
restarted actor finds it empty and reads the user's unprocessed rows from the store.
"""

from __future__ import annotations

from collections.abc import Callable

from concierge.protocol import ConversationMsg


class Handover:
    __slots__ = ("_messages", "_on_taken")

    def __init__(
        self, first: ConversationMsg, *, on_taken: Callable[[Handover, int], None]
    ) -> None:
        self._messages: list[ConversationMsg] | None = [first]
        self._on_taken: Callable[[Handover, int], None] | None = on_taken

    def __len__(self) -> int:
        return 0 if self._messages is None else len(self._messages)

    def add(self, msg: ConversationMsg) -> None:
        if self._messages is None:
            raise RuntimeError("this handover was taken: send to the actor's queue instead")
        self._messages.append(msg)

    def take(self) -> list[ConversationMsg]:
        """The messages, in arrival order; ``[]`` once taken (a restart)."""
        messages, self._messages = self._messages or [], None
        on_taken, self._on_taken = self._on_taken, None
        if on_taken is not None:
            on_taken(self, len(messages))
        return messages
