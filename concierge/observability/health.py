"""The daemon's view of itself for probes: liveness, readiness and the health report.

``HealthBoard`` gathers every registered ``Observable`` (supervisors, stores,
providers, channels) and turns them into draft-inadarei-api-health-check JSON.
Readiness is its own question: every permanent child running and the daemon
not draining.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from concierge.observability.checks import Check, Observable, Status
from supervisors import ChildState, Restart, SupervisorState, SupervisorStatistics


@attrs.define
class HealthBoard:
    version: str
    service_id: str = "concierge"
    observables: list[Observable] = attrs.field(factory=list)
    supervisors: list[Callable[[], SupervisorStatistics]] = attrs.field(factory=list)
    draining: bool = False
    started_monotonic: float = attrs.field(factory=time.monotonic)

    def register(self, observable: Observable) -> None:
        self.observables.append(observable)

    def watch_supervisor(self, statistics: Callable[[], SupervisorStatistics]) -> None:
        self.supervisors.append(statistics)

    # -- readiness ----------------------------------------------------------------------
    def not_ready_reasons(self) -> list[str]:
        if self.draining:
            return ["shutting down"]
        reasons: list[str] = []
        for stats in self._supervisor_stats():
            for child in stats.children:
                if child.restart_type == Restart.PERMANENT and child.state != ChildState.RUNNING:
                    reasons.append(f"{stats.name}/{child.id} is {child.state.value}")
        for check in self.checks():
            if check.status is Status.FAIL:
                reasons.append(f"{check.key} is failing")
        return reasons

    # -- health report ----------------------------------------------------------------------
    def _supervisor_stats(self) -> list[SupervisorStatistics]:
        return [stats() for stats in self.supervisors]

    def checks(self) -> list[Check]:
        found: list[Check] = []
        for stats in self._supervisor_stats():
            found.extend(supervisor_checks(stats))
        for observable in self.observables:
            found.extend(observable.health_checks())
        return found

    def report(self) -> tuple[dict[str, Any], Status]:
        checks = self.checks()
        status = Status.worst(c.status for c in checks)
        if self.draining:
            status = Status.FAIL
        grouped: dict[str, list[dict[str, Any]]] = {}
        for check in checks:
            grouped.setdefault(check.key, []).append(check.as_json())
        grouped.setdefault("uptime", []).append(
            {
                "componentType": "system",
                "observedValue": round(time.monotonic() - self.started_monotonic, 3),
                "observedUnit": "s",
                "status": Status.PASS.value,
                "time": datetime.now(UTC).isoformat(),
            }
        )
        body: dict[str, Any] = {
            "status": status.value,
            "version": self.version.split(".")[0],
            "releaseId": self.version,
            "serviceId": self.service_id,
            "description": "concierge daemon",
            "checks": grouped,
        }
        notes = [f"{c.key}: {c.output}" for c in checks if c.status is not Status.PASS and c.output]
        if self.draining:
            notes.insert(0, "draining: the daemon is shutting down")
        if notes:
            body["notes"] = notes
            body["output"] = notes[0]
        return body, status

    # -- metrics --------------------------------------------------------------------------
    def metrics(self) -> Iterable[Metric]:
        restarts = CounterMetricFamily(
            "concierge_supervisor_restarts",
            "Child restarts since start",
            labels=["supervisor", "child"],
        )
        running = GaugeMetricFamily(
            "concierge_supervisor_child_running",
            "1 while the child runs",
            labels=["supervisor", "child"],
        )
        for stats in self._supervisor_stats():
            for child in stats.children:
                restarts.add_metric([stats.name, child.id], child.restart_count)
                running.add_metric(
                    [stats.name, child.id], 1.0 if child.state == ChildState.RUNNING else 0.0
                )
        yield restarts
        yield running
        yield GaugeMetricFamily(
            "concierge_ready",
            "1 when /readyz answers 200",
            value=0.0 if self.not_ready_reasons() else 1.0,
        )
        yield from merge_families(m for o in self.observables for m in o.metrics())


def merge_families(families: Iterable[Metric]) -> list[Metric]:
    """One family per name: observables of one kind (an outbox per channel) each yield theirs.

    The exposition format allows one ``# TYPE`` line per name; same-named families of
    one type are merged (their samples differ by label), families of two types clash.
    """
    merged: dict[str, Metric] = {}
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = family
        elif first.type != family.type:
            raise ValueError(f"metric {family.name} is both a {first.type} and a {family.type}")
        else:
            first.samples.extend(family.samples)
    return list(merged.values())


def supervisor_checks(stats: SupervisorStatistics) -> Iterable[Check]:
    """One check per supervisor: pass while permanent children run, warn while restarting."""
    status = Status.PASS
    output = None
    if stats.state in (SupervisorState.GAVE_UP, SupervisorState.STOPPED):
        status, output = Status.FAIL, f"supervisor {stats.state.value}"
    else:
        down = [
            c
            for c in stats.children
            if c.restart_type == Restart.PERMANENT and c.state != ChildState.RUNNING
        ]
        if down or stats.restarts_in_window:
            status = Status.WARN
            output = (
                f"{len(down)} child(ren) not running"
                if down
                else f"{stats.restarts_in_window} restart(s) in the last {stats.period_s:g}s"
            )
    yield Check(
        component=f"supervisor.{stats.name}",
        measurement="restarts",
        status=status,
        observed_value=stats.restarts_in_window,
        observed_unit="restarts",
        output=output,
        details={
            "strategy": stats.strategy.value,
            "state": stats.state.value,
            "maxRestarts": stats.max_restarts,
            "periodS": stats.period_s,
            "children": [
                {
                    "id": c.id,
                    "state": c.state.value,
                    "restartType": c.restart_type.value,
                    "restartCount": c.restart_count,
                    "restartsInWindow": c.restarts_in_window,
                    "lastFailure": c.last_failure,
                }
                for c in stats.children
            ],
        },
    )
