"""Adapters: health transitions, breaker events and dead letters turned into alerts.

Each method is a listener with the signature its source expects, so the
daemon subscribes them without the sources importing this package::

    adapters = AlertAdapters(manager)
    monitor.add_listener(adapters.on_health_transition)   # StatusTransition
    breaker.add_listener(adapters.on_breaker_event)       # BreakerEvent
    dlq.add_listener(adapters.on_dead_letter_dead)        # DeadLetterEvent

A listener never raises: a bad event is logged and dropped, because the
source (a breaker, the monitor) must not fail for an alerting problem.
"""

from __future__ import annotations

import threading
from typing import Final

import structlog

from biomem.alerts.manager import AlertManager
from biomem.alerts.model import Severity
from biomem.health.model import Status, StatusTransition
from biomem.resilience.breaker import BreakerEvent, BreakerState, StateTransition
from biomem.resilience.deadletter import DeadLetterDead, DeadLetterEvent

__all__ = ["AlertAdapters"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

# status -> (alertname, severity); HEALTHY resolves, UNKNOWN changes nothing.
_HEALTH_ALERTS: Final = {
    Status.DEGRADED: ("ComponentDegraded", Severity.WARNING),
    Status.UNHEALTHY: ("ComponentUnhealthy", Severity.ERROR),
    Status.CRITICAL: ("ComponentUnhealthy", Severity.CRITICAL),
}
_OPEN_STATES: Final = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_CLOSED_STATES: Final = (BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.METRICS_ONLY)


class AlertAdapters:
    """Listeners that fire and resolve alerts on ``manager``."""

    def __init__(self, manager: AlertManager) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        # component -> the labels of the health alert fired for it, to resolve later.
        self._health: dict[str, dict[str, str]] = {}

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
