"""Gathering one :class:`~biomem.recovery.rules.Observation` from the running process.

Sources: the health monitor (latest statuses and each component's history,
and the ``system_resources`` measurements), the breakers (their transitions,
to know since when one has not closed), the dead-letter queue (pending
depth, one bounded store read), the orchestrator (stage runs in progress)
and the process registry (workers past their deadline).

Resource readings are kept here, one per monitor result (a result is told by
its ``checked_at``), so "N readings in a row" counts checks, not evaluations.
A source that fails leaves its part empty (``dead_letters`` None): the
triggers reading it stay pending instead of guessing. So does a monitor that
runs on request once its last result has outlived the interval: statuses,
history and resource readings are left out until a request checks again,
rather than acting again and again on an old reading.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from biomem.health.model import Status
from biomem.logging import get_logger
from biomem.metrics import BoundedReader
from biomem.recovery.processes import ProcessRegistry
from biomem.recovery.rules import Observation, StageRun, Worker
from biomem.resilience.breaker import BreakerEvent, BreakerState, StateTransition
from biomem.resilience.clock import Clock
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.resilience.errors import BiomemError

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.health.monitor import HealthMonitor
    from biomem.orchestrator import Orchestrator

__all__ = ["RESOURCE_MEASUREMENTS", "LiveSignals", "SignalSource"]

log = get_logger(__name__)

# system_resources measurement names, by the resource names rules use.
RESOURCE_MEASUREMENTS = {
    "memory": "memoryUtilization",
    "disk": "diskUtilization",
    "cpu": "cpuUtilization",
    "file_descriptors": "openFileDescriptors",
}
_HISTORY = 64  # readings kept per resource: more than any sensible consecutive_checks
_NOT_CLOSED = (BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.FORCED_OPEN)


class SignalSource(Protocol):
    """What the engine observes; tests give it observations of their own."""

    def observe(self, now: float) -> Observation: ...


class LiveSignals:
    """Observations of this process: monitor, breakers, dead letters, stage runs, workers.

    Args:
        app: breakers (the guards) and the dead-letter queue.
        monitor: statuses and history.
        orchestrator: stage runs in progress; None outside the daemon.
        processes: workers biomem started.
        clock: the breakers' clock (their transition times are on it).
        reader: bounds the dead-letter read, so a busy store cannot stall recovery.
    """

    def __init__(
        self,
        app: App,
        monitor: HealthMonitor,
        *,
        orchestrator: Orchestrator | None,
        processes: ProcessRegistry,
        clock: Clock,
        reader: BoundedReader | None = None,
    ) -> None:
        self._app = app
        self._monitor = monitor
        self._orchestrator = orchestrator
        self._processes = processes
        self._clock = clock
        self._reader = reader if reader is not None else BoundedReader(timeout_s=2.0)
        self._lock = threading.Lock()
        self._open_since: dict[str, float] = {}
        self._resources: dict[str, deque[Status]] = {
            name: deque(maxlen=_HISTORY) for name in RESOURCE_MEASUREMENTS
        }
        self._last_reading: datetime | None = None
        started = clock.monotonic()
        for breaker in app.guards.breakers.all():
            # Already not closed when we start: count from now, the earliest we know.
            if breaker.state in _NOT_CLOSED:
                self._open_since[breaker.name] = started
            breaker.add_listener(self._on_breaker)

    def _on_breaker(self, event: BreakerEvent) -> None:
        if not isinstance(event, StateTransition):
            return
        with self._lock:
            if event.to_state in _NOT_CLOSED:
                # OPEN → HALF_OPEN → OPEN is one outage: keep when it began.
                self._open_since.setdefault(event.name, event.at)
            else:
                self._open_since.pop(event.name, None)

    def _read_resources(self) -> dict[str, tuple[Status, ...]]:
        component = self._monitor.snapshot().component("system_resources")
        with self._lock:
            if component is not None and component.checked_at != self._last_reading:
                self._last_reading = component.checked_at
                by_name = {m.name: m.status for m in component.measurements}
                for resource, measurement in RESOURCE_MEASUREMENTS.items():
                    status = by_name.get(measurement)
                    if status is not None and status is not Status.UNKNOWN:
                        self._resources[resource].append(status)
            return {name: tuple(history) for name, history in self._resources.items()}

    def _dead_letters(self) -> int | None:
        dlq = self._app.dlq
        try:
            counts = self._reader.call(dlq.counts)
        except (BiomemError, TimeoutError) as exc:  # a busy or failing store: the trigger waits
            log.debug("recovery_dead_letters_unreadable", error=str(exc))
            return None
        return int(counts.get(DeadLetterStatus.PENDING, 0))

    def observe(self, now: float) -> Observation:
        current = self._monitor.result_is_current()
        snapshot = self._monitor.snapshot()
        names = list(snapshot.components) if current else []
        history = {
            name: tuple(status for _, status in self._monitor.history(name)) for name in names
        }
        with self._lock:
            open_s = {name: max(0.0, now - since) for name, since in self._open_since.items()}
        runs: tuple[StageRun, ...] = ()
        if self._orchestrator is not None:
            runs = tuple(
                StageRun(r.pass_id, r.job, r.stage, r.running_s, r.cancelled)
                for r in self._orchestrator.active_runs()
            )
        workers = tuple(
            Worker(w.pid, w.purpose, now - w.deadline) for w in self._processes.stuck(now)
        )
        return Observation(
            at=now,
            statuses={name: snapshot.components[name].status for name in names},
            history=history,
            resources=self._read_resources() if current else {},
            breakers_open_s=open_s,
            dead_letters=self._dead_letters(),
            stage_runs=runs,
            stuck_workers=workers,
        )
