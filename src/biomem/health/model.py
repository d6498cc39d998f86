"""The health model: statuses, component results, snapshots and their aggregation.

Internally five statuses (healthy, degraded, unhealthy, critical, unknown);
on the wire (application/health+json, draft-inadarei-api-health-check) three:
pass, warn, fail. The overall status is the worst component status weighted
by criticality: a *required* component (duckdb, the process's resources)
that is unhealthy or critical fails the whole; an *optional* one
(postgresql, ollama) whose fallback works only degrades it, so a machine
without Ollama reports ``warn`` with HTTP 200.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Check",
    "ComponentHealth",
    "HealthSnapshot",
    "Measurement",
    "Status",
    "StatusTransition",
    "aggregate",
]


class Status(StrEnum):
    """A component's health, worst last (except UNKNOWN, which is not yet known)."""

    HEALTHY = "healthy"  # working as intended
    DEGRADED = "degraded"  # working, with a fallback or below par
    UNHEALTHY = "unhealthy"  # not working
    CRITICAL = "critical"  # not working, and the process cannot do its job
    UNKNOWN = "unknown"  # not checked yet, not configured, or the check itself failed

    @property
    def wire(self) -> str:
        """pass / warn / fail, for application/health+json."""
        if self is Status.HEALTHY:
            return "pass"
        if self in (Status.DEGRADED, Status.UNKNOWN):
            return "warn"
        return "fail"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    Status.HEALTHY: 0,
    Status.UNKNOWN: 1,
    Status.DEGRADED: 2,
    Status.UNHEALTHY: 3,
    Status.CRITICAL: 4,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One observed value, keyed ``component:name`` on the wire."""

    name: str  # e.g. responseTime, memoryUtilization
    value: float | int | str | bool | None
    unit: str | None = None  # e.g. ms, percent, bytes
    status: Status = Status.HEALTHY
    output: str | None = None  # why, when not healthy


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentHealth:
    """One component's result."""

    name: str  # postgresql, duckdb, ollama, system_resources, pipeline
    component_type: str  # datastore, component, system
    status: Status
    required: bool
    checked_at: datetime
    duration_ms: float
    output: str | None = None
    measurements: tuple[Measurement, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


class Check:
    """A health check: a name, whether the process needs it, and one async run."""

    name: str = ""
    component_type: str = "component"
    required: bool = False
    timeout_s: float = 5.0

    async def run(self) -> ComponentHealth:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSnapshot:
    """Every component's latest result and the status they add up to."""

    status: Status
    components: Mapping[str, ComponentHealth]
    taken_at: datetime

    def component(self, name: str) -> ComponentHealth | None:
        return self.components.get(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusTransition:
    """A component (or ``overall``) changed status; alerts and recovery subscribe."""

    component: str
    previous: Status
    current: Status
    at: datetime
    output: str | None = None


def aggregate(components: Iterable[ComponentHealth]) -> Status:
    """The overall status: the worst component status, weighted by criticality.

    An optional component counts at most as DEGRADED (its fallback carries
    the work); a required one counts fully. UNKNOWN components (not
    configured, not checked yet) do not count, so an embedded-only machine
    can pass; only when nothing is known is the whole UNKNOWN.
    """
    worst: Status | None = None
    for item in components:
        status = item.status
        if status is Status.UNKNOWN:
            continue
        if not item.required and status.rank > Status.DEGRADED.rank:
            status = Status.DEGRADED
        if worst is None or status.rank > worst.rank:
            worst = status
    return worst if worst is not None else Status.UNKNOWN
