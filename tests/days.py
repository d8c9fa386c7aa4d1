"""A calendar a test turns by hand, for what counts per UTC day (the token budgets)."""

from __future__ import annotations

from datetime import date

MONDAY, TUESDAY = date(2026, 3, 2), date(2026, 3, 3)


class Calendar:
    """``today`` for code that takes one: Monday until the test sets ``day``."""

    def __init__(self) -> None:
        self.day = MONDAY

    def __call__(self) -> date:
        return self.day
