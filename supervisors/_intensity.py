"""The restart-intensity window: how many restarts happened in the last ``period_s``."""

from __future__ import annotations

from collections import deque

import attrs


@attrs.define
class RestartWindow:
    """Timestamps (trio time) of the restarts younger than ``period_s``, as OTP keeps them.

    A restart made exactly ``period_s`` ago has left the window.
    """

    period_s: float
    _times: deque[float] = attrs.field(factory=deque, init=False)

    def count(self, now: float | None) -> int:
        """Restarts still inside the window at ``now`` (all of them when ``now`` is None)."""
        if now is not None:
            self._prune(now)
        return len(self._times)

    def try_add(self, now: float, limit: int) -> bool:
        """Record a restart at ``now`` unless it would make more than ``limit`` in the window."""
        self._prune(now)
        if len(self._times) + 1 > limit:
            return False
        self._times.append(now)
        return True

    def add(self, now: float) -> None:
        self._prune(now)
        self._times.append(now)

    def clear(self) -> None:
        self._times.clear()

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.period_s:
            self._times.popleft()
