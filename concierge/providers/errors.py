"""The one error an adapter raises: a failed attempt, already classified.

ProviderError    one attempt failed; ``outcome`` says whose fault and what the pool does
"""

from __future__ import annotations

from concierge.protocol import Outcome


class ProviderError(Exception):
    """A classified failure of one attempt.

    ``retry_after_s`` is the server's hint for ``THROTTLED`` (``None`` when it gave none).
    """

    def __init__(
        self, outcome: Outcome, detail: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{outcome.value}: {detail}")
        self.outcome = outcome
        self.detail = detail
        self.retry_after_s = retry_after_s

    @classmethod
    def no_answer(cls, timeout_s: float, *, what: str = "") -> ProviderError:
        """The attempt ran out of time: the provider's fault, worth trying elsewhere."""
        return cls(Outcome.TRANSIENT, f"{what}no answer within {timeout_s:g} s")
