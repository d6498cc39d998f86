"""Recovery as the daemon runs it, and as ``biomem recovery run`` runs one rule.

:class:`RecoveryService` wires the engine to the process: the live signals
(monitor, breakers, dead letters, stage runs, workers), the audit in the
store, the process registry (its spool directory under the data directory),
the log file, and the escalator — the alert service when it can escalate,
otherwise a critical log event. The engine thread starts with
:meth:`RecoveryService.start` and stops, together with any command still
running, with :meth:`RecoveryService.stop`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from biomem.logging import get_logger, log_file
from biomem.recovery.actions import CallableEscalator, Escalator, LogEscalator
from biomem.recovery.audit import RecoveryAudit
from biomem.recovery.engine import RecoveryEngine
from biomem.recovery.processes import ProcessRegistry, own_temp_dir
from biomem.recovery.rules import Observation
from biomem.recovery.signals import LiveSignals
from biomem.resilience.clock import Clock

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.health.monitor import HealthMonitor
    from biomem.orchestrator import Orchestrator

__all__ = ["QuietSignals", "RecoveryService", "escalator_for", "manual_engine"]

log = get_logger(__name__)


def escalator_for(target: object | None) -> Escalator:
    """``target``'s ``escalate(*, rule, component, summary)`` if it has one, else a log."""
    escalate = getattr(target, "escalate", None)
    if callable(escalate):
        return CallableEscalator(escalate)
    return LogEscalator()


class QuietSignals:
    """No observation beyond the time: for one-off runs, where no monitor runs."""

    def observe(self, now: float) -> Observation:
        return Observation(at=now)


def manual_engine(app: App, orchestrator: Orchestrator | None) -> RecoveryEngine:
    """An engine for ``biomem recovery run``: this process's resources, no evaluation loop."""
    clock = app.guards.clock
    return RecoveryEngine(
        app=app,
        signals=QuietSignals(),
        audit=RecoveryAudit(app.store),
        processes=ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock),
        escalator=LogEscalator(),
        orchestrator=orchestrator,
        log_file=log_file(),
    )


class RecoveryService:
    """The daemon's recovery: the engine on its thread, wired to the live process.

    Args:
        alerting: the alert service; used as the escalator when it has ``escalate``.
    """

    def __init__(
        self,
        app: App,
        monitor: HealthMonitor,
        orchestrator: Orchestrator | None,
        *,
        alerting: object | None = None,
        clock: Clock | None = None,
    ) -> None:
        clock = clock if clock is not None else app.guards.clock
        self.processes = ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock)
        self.audit = RecoveryAudit(app.store)
        self.engine = RecoveryEngine(
            app=app,
            signals=LiveSignals(
                app, monitor, orchestrator=orchestrator, processes=self.processes, clock=clock
            ),
            audit=self.audit,
            processes=self.processes,
            escalator=escalator_for(alerting),
            orchestrator=orchestrator,
            clock=clock,
            log_file=log_file(),
        )

    def snapshot(self) -> dict[str, Any]:
        """What /health/detailed shows under ``recovery``."""
        return self.engine.snapshot()

    def counts(self) -> dict[tuple[str, str, str], int]:
        """biomem_recovery_actions_total by (rule, action, result)."""
        return self.engine.counts()

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        """Stop evaluating, end commands still running, write what the audit holds."""
        self.engine.request_stop()
        # First the commands: an action waiting on one (a restart) then ends at once.
        self.processes.close()
        self.engine.stop()
        if not self.audit.flush():
            log.warning("recovery_audit_unwritten_at_stop")
