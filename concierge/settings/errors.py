"""Errors of the settings.

SettingsError    one variable is wrong; the message names it and says what would be right
"""

from __future__ import annotations


class SettingsError(ValueError):
    """One setting is wrong; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem
