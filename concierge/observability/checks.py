"""How a component tells operators about itself: health checks and Prometheus metrics.

A component (a supervisor, the store, the provider pool, a channel) implements
``Observable``; the HTTP app gathers every registered one into ``/health``
(draft-inadarei-api-health-check) and ``/metrics``. Components compute both from
their own ``statistics()`` snapshot, so nothing here holds mutable global state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import attrs
from prometheus_client.core import Metric


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @staticmethod
    def worst(statuses: Iterable[Status]) -> Status:
        order = [Status.PASS, Status.WARN, Status.FAIL]
        return max(statuses, key=order.index, default=Status.PASS)


@attrs.frozen(kw_only=True)
class Check:
    """One entry of ``checks["{component}:{measurement}"]`` in ``/health``."""

    component: str
    measurement: str
    status: Status
    component_type: str = "component"
    component_id: str | None = None
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    time: datetime | None = None
    details: dict[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> str:
        return f"{self.component}:{self.measurement}"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"componentType": self.component_type, "status": self.status.value}
        if self.component_id is not None:
            body["componentId"] = self.component_id
        if self.observed_value is not None:
            body["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            body["observedUnit"] = self.observed_unit
        if self.output is not None:
            body["output"] = self.output
        if self.time is not None:
            body["time"] = self.time.isoformat()
        body.update(self.details)
        return body


class LatencyHistogram:
    """Handling times of HTTP requests, in Prometheus's cumulative buckets (seconds)."""

    BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(self.BOUNDS)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.BOUNDS):
            if seconds <= bound:
                self.counts[i] += 1
        self.sum += seconds
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """``(upper bound, count)`` pairs as ``HistogramMetricFamily.add_metric`` takes them."""
        pairs = [(f"{b:g}", float(c)) for b, c in zip(self.BOUNDS, self.counts, strict=True)]
        pairs.append(("+Inf", float(self.count)))
        return pairs


class Observable(Protocol):
    def health_checks(self) -> Iterable[Check]: ...

    def metrics(self) -> Iterable[Metric]: ...
