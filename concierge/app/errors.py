"""Errors of the daemon's own commands.

CommandError     a CLI command could not do what was asked; the message says why
"""

from __future__ import annotations


class CommandError(Exception):
    """A command failed for a reason the operator can act on."""
