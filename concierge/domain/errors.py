"""Errors of the community's configuration and of the staff desk.

ConfigError        a file under CONCIERGE_CONFIG_DIR is missing or wrong; the message names it
DeskError          an operator action cannot be done as asked; the message says why
├── NoSuchHandoff      no handoff has that number
├── HandoffNotActive   the handoff is closed (or its user was forgotten): nothing is sent
└── HandoffTaken       another staff member claimed it (take it over explicitly)
LinkRefused        two persons cannot be linked, or an identity unlinked, as asked
└── MergeAbandoned     a conversation of one side did not end its turn in time: retry
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The community's configuration (knowledge base, triage rules, prompts) cannot be loaded."""


class DeskError(Exception):
    """Base class of the staff desk's refusals; ``handoff_id`` names the handoff asked for."""

    def __init__(self, message: str, *, handoff_id: int) -> None:
        super().__init__(message)
        self.handoff_id = handoff_id


class NoSuchHandoff(DeskError, LookupError):
    def __init__(self, handoff_id: int) -> None:
        super().__init__(f"there is no handoff {handoff_id}", handoff_id=handoff_id)


class HandoffNotActive(DeskError):
    def __init__(self, handoff_id: int, *, why: str = "it is closed") -> None:
        super().__init__(f"handoff {handoff_id} is not active: {why}", handoff_id=handoff_id)


class HandoffTaken(DeskError):
    def __init__(self, handoff_id: int, *, by: str) -> None:
        super().__init__(
            f"handoff {handoff_id} is claimed by {by}: take it over to claim it",
            handoff_id=handoff_id,
        )
        self.by = by


class LinkRefused(Exception):
    """Two persons cannot be linked, or an identity unlinked, as asked; the message says why."""


class MergeAbandoned(LinkRefused):
    """A conversation of one side did not end its turn in time: nothing was merged."""
