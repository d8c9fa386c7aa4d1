"""Whether the operator API is on, and how often tokens were refused: for ``/health`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from prometheus_client.core import CounterMetricFamily, Metric

from concierge.observability import Check, Status


@attrs.define(kw_only=True)
class ApiStatus:
    """``signing_keys`` is 0 when ``CONCIERGE_JWT_KEYS`` is unset: the API and console are off."""

    signing_keys: int
    refused: int = 0
    forbidden: int = 0

    def health_checks(self) -> Iterable[Check]:
        on = self.signing_keys > 0
        yield Check(
            component="operatorApi",
            measurement="enabled",
            status=Status.PASS,
            observed_value=on,
            output=(
                f"on: /api/v1 and /console, {self.signing_keys} signing key(s)"
                if on
                else "off: CONCIERGE_JWT_KEYS is unset, so /api/v1 and /console are not served"
            ),
            details={"tokensRefused": self.refused, "forbidden": self.forbidden},
        )

    def metrics(self) -> Iterable[Metric]:
        refused = CounterMetricFamily(
            "concierge_api_auth_refused",
            "Operator API requests refused: no token or a bad one (401), or too small a role (403)",
            labels=["status"],
        )
        refused.add_metric(["401"], self.refused)
        refused.add_metric(["403"], self.forbidden)
        yield refused
