"""Errors of the community's configuration.

ConfigError      a file under CONCIERGE_CONFIG_DIR is missing or wrong; the message names it
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The community's configuration (knowledge base, triage rules, prompts) cannot be loaded."""
