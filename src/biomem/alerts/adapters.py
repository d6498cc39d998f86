"""Adapters: health, breakers, dead letters, resources and recovery turned into alerts.

Each method is a listener with the signature its source expects, so the
daemon subscribes them without the sources importing this package::

    adapters = AlertAdapters(manager)
    monitor.add_listener(adapters.on_health_transition)   # StatusTransition
    breaker.add_listener(adapters.on_breaker_event)       # BreakerEvent
    dlq.add_listener(adapters.on_dead_letter_dead)        # DeadLetterEvent
    adapters.on_snapshot(monitor.snapshot())              # each new snapshot: resources,
                                                          # escalations resolved
    adapters.on_escalation(rule=..., component=..., summary=..., at=...)  # recovery gave up

A listener never raises: a bad event is logged and dropped, because the
source (a breaker, the monitor) must not fail for an alerting problem.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog

from biomem.alerts.manager import AlertManager
from biomem.alerts.model import Severity
from biomem.health.model import ComponentHealth, HealthSnapshot, Status, StatusTransition
from biomem.resilience.breaker import BreakerEvent, BreakerState, StateTransition
from biomem.resilience.deadletter import DeadLetterDead, DeadLetterEvent

__all__ = ["NOT_REFIRED", "AlertAdapters"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

# status -> (alertname, severity); HEALTHY resolves, UNKNOWN changes nothing.
_HEALTH_ALERTS: Final = {
    Status.DEGRADED: ("ComponentDegraded", Severity.WARNING),
    Status.UNHEALTHY: ("ComponentUnhealthy", Severity.ERROR),
    Status.CRITICAL: ("ComponentUnhealthy", Severity.CRITICAL),
}
# resource label -> the system_resources measurement it is read from.
_RESOURCES: Final = {
    "memory": "memoryUtilization",
    "disk": "diskUtilization",
    "cpu": "cpuUtilization",
    "fds": "openFileDescriptors",
}
# Alertnames no source fires again when the daemon starts (a dead letter turns dead
# once; only a person ends it): the manager keeps them firing across a restart
# rather than resolve them after its restore grace (see biomem.alerts.manager).
NOT_REFIRED: Final = ("DeadLetterDead",)
_OPEN_STATES: Final = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_CLOSED_STATES: Final = (BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.METRICS_ONLY)


@dataclass(frozen=True, slots=True)
class _Escalation:
    labels: dict[str, str]
    at: datetime  # a healthy result checked after this resolves it


def resource_levels(component: ComponentHealth) -> dict[str, Severity | None]:
    """Each resource's alert severity in a system_resources result; None: under threshold.

    Resources that could not be measured are left out (nothing is known).
    CPU is graded against the thresholds in the result's details, because its
    measurement never says more than degraded (a busy CPU must not fail
    /health) while its alert should say critical.
    """
    thresholds = component.details.get("thresholds") or {}
    measured = {m.name: m for m in component.measurements}
    out: dict[str, Severity | None] = {}
    for resource, name in _RESOURCES.items():
        m = measured.get(name)
        if m is None or m.status is Status.UNKNOWN:
            continue
        status = m.status
        critical = thresholds.get("cpu_critical_percent")
        if (
            resource == "cpu"
            and isinstance(m.value, int | float)
            and isinstance(critical, int | float)
            and m.value > critical
        ):
            status = Status.CRITICAL
        if status in (Status.CRITICAL, Status.UNHEALTHY):
            out[resource] = Severity.CRITICAL
        elif status is Status.DEGRADED:
            out[resource] = Severity.WARNING
        else:
            out[resource] = None
    return out


class AlertAdapters:
    """Listeners that fire and resolve alerts on ``manager``."""

    def __init__(self, manager: AlertManager) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        # component -> the labels of the health alert fired for it, to resolve later.
        self._health: dict[str, dict[str, str]] = {}
        # resource -> the labels of its threshold alert while one fires.
        self._resources: dict[str, dict[str, str]] = {}
        # (rule, component) -> the escalation firing and since when.
        self._escalations: dict[tuple[str, str], _Escalation] = {}

    def on_health_transition(self, transition: StatusTransition) -> None:
        """Fire for a component that is degraded/unhealthy/critical; resolve when healthy.

        A change between bad statuses resolves the old alert and fires the
        new one (degraded → unhealthy: ``ComponentDegraded`` resolves,
        ``ComponentUnhealthy`` fires).
        """
        try:
            self._health_transition(transition)
        except Exception:
            log.exception("alert_adapter_failed", source="health", component=transition.component)

    def _health_transition(self, transition: StatusTransition) -> None:
        current = transition.current
        if current is Status.UNKNOWN:
            return  # not known is not a recovery, nor a failure
        wanted = _HEALTH_ALERTS.get(current)
        labels = None
        if wanted is not None:
            name, severity = wanted
            labels = {
                "alertname": name,
                "component": transition.component,
                "severity": severity.value,
            }
        with self._lock:
            previous = self._health.get(transition.component)
            if previous is not None and previous != labels:
                self._manager.resolve(previous)
                del self._health[transition.component]
            if labels is not None:
                annotations = {
                    "summary": f"{transition.component} is {current.value}",
                    "description": transition.output or "",
                    "previous": transition.previous.value,
                }
                self._manager.fire(labels, annotations)
                self._health[transition.component] = labels

    def on_breaker_event(self, event: BreakerEvent) -> None:
        """Fire ``CircuitOpen`` when a breaker opens; resolve it when the breaker closes."""
        if not isinstance(event, StateTransition):
            return
        try:
            labels = {"alertname": "CircuitOpen", "component": event.name, "severity": "error"}
            if event.to_state in _OPEN_STATES:
                self._manager.fire(
                    labels,
                    {
                        "summary": f"circuit breaker {event.name} is {event.to_state.value}",
                        "description": f"was {event.from_state.value}; calls are refused",
                    },
                )
            elif event.to_state in _CLOSED_STATES:
                self._manager.resolve(labels)
            # HALF_OPEN: still failing as far as anyone knows; the alert stays.
        except Exception:
            log.exception("alert_adapter_failed", source="breaker", breaker=event.name)

    def on_dead_letter_dead(self, event: DeadLetterEvent) -> None:
        """Fire ``DeadLetterDead`` for a letter given up on; only a person resolves it."""
        if not isinstance(event, DeadLetterDead):
            return
        letter = event.letter
        try:
            self._manager.fire(
                {
                    "alertname": "DeadLetterDead",
                    "operation": letter.operation,
                    "component": letter.component,
                    "severity": "error",
                },
                {
                    "summary": f"dead letter {letter.id} ({letter.operation}) needs a person",
                    "description": f"{letter.error_class}: {letter.message}",
                    "attempts": str(letter.attempts),
                    "letter_id": letter.id,
                },
            )
        except Exception:
            log.exception("alert_adapter_failed", source="deadletter", operation=letter.operation)

    def on_snapshot(self, snapshot: HealthSnapshot) -> None:
        """Fire/resolve resource threshold alerts; resolve escalations of healthy components."""
        try:
            system = snapshot.component("system_resources")
            if system is not None and system.status is not Status.UNKNOWN:
                self._resource_alerts(system)
            self._settle_escalations(snapshot)
        except Exception:
            log.exception("alert_adapter_failed", source="snapshot")

    def _resource_alerts(self, system: ComponentHealth) -> None:
        measured = {m.name: m for m in system.measurements}
        with self._lock:
            for resource, severity in resource_levels(system).items():
                labels = None
                if severity is not None:
                    labels = {
                        "alertname": "ResourceThresholdExceeded",
                        "component": system.name,
                        "resource": resource,
                        "severity": severity.value,
                    }
                previous = self._resources.get(resource)
                if previous is not None and previous != labels:
                    self._manager.resolve(previous)
                    del self._resources[resource]
                if labels is None:
                    continue
                m = measured[_RESOURCES[resource]]
                unit = "%" if m.unit == "percent" else f" {m.unit or ''}".rstrip()
                self._manager.fire(
                    labels,
                    {
                        "summary": m.output or f"{resource} over its threshold",
                        "value": f"{m.value}{unit}",
                    },
                )
                self._resources[resource] = labels

    def on_escalation(self, *, rule: str, component: str, summary: str, at: datetime) -> None:
        """Fire a critical ``RecoveryEscalated``; it resolves on the component's next healthy
        result checked after ``at``. Raises on bad input (unlike the listeners)."""
        labels = {
            "alertname": "RecoveryEscalated",
            "rule": rule,
            "component": component,
            "severity": Severity.CRITICAL.value,
        }
        annotations = {
            "summary": summary,
            "description": f"automated recovery rule {rule} gave up on {component}; "
            "a person is needed",
        }
        with self._lock:
            self._manager.fire(labels, annotations)
            self._escalations[(rule, component)] = _Escalation(labels, at)

    def _settle_escalations(self, snapshot: HealthSnapshot) -> None:
        with self._lock:
            for key, escalation in list(self._escalations.items()):
                component = key[1]
                if component == "overall":
                    healthy, checked = snapshot.status is Status.HEALTHY, snapshot.taken_at
                else:
                    result = snapshot.component(component)
                    if result is None:
                        continue
                    healthy, checked = result.status is Status.HEALTHY, result.checked_at
                if healthy and checked > escalation.at:
                    self._manager.resolve(escalation.labels)
                    del self._escalations[key]
