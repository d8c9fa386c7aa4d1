"""Errors of the daemon's own commands.

CommandError     a CLI command could not do what was asked; the message says why
CannotListen     the HTTP address is taken or not ours to bind: a setting to fix, not a restart
DataDirInUse     another daemon runs on the same SQLite data directory
"""

from __future__ import annotations


class CommandError(Exception):
    """A command failed for a reason the operator can act on."""


class CannotListen(Exception):
    """The daemon cannot bind its HTTP address; the message names it and why."""


class DataDirInUse(Exception):
    """Another daemon holds the SQLite data directory's lock; the message names the directory."""
