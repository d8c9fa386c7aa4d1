"""Errors of the daemon's own commands.

CommandError     a CLI command could not do what was asked; the message says why
ConfigError      a file under CONCIERGE_CONFIG_DIR is missing or wrong; the message names it
"""

from __future__ import annotations


class CommandError(Exception):
    """A command failed for a reason the operator can act on."""


class ConfigError(ValueError):
    """The community's configuration (knowledge base, triage rules, prompts) cannot be loaded."""
