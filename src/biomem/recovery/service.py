"""Recovery as the daemon runs it, and as ``biomem recovery run`` runs one rule.

:class:`RecoveryService` wires the engine to the process: the live signals
(monitor, breakers, dead letters, stage runs, workers), the audit in the
store, the process registry (its spool directory under the data directory),
the log file, and the escalator — the alert service when it can escalate,
otherwise a critical log event. The engine thread starts with
:meth:`RecoveryService.start` and stops, together with any command still
running, with :meth:`RecoveryService.stop`. While it runs, the daemon holds
the store, so ``biomem recovery rules|history|run`` ask it over HTTP
(:mod:`biomem.recovery.routes`): the service answers them.

:func:`manual_engine` is the one-off engine of ``biomem recovery run`` when
no daemon runs: it waits for the commands it starts, since nobody would
collect them after the command line exits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from biomem.config.recovery import RecoveryRule
from biomem.logging import get_logger, log_file
from biomem.recovery.actions import CallableEscalator, Escalator, LogEscalator
from biomem.recovery.audit import PersistedState, RecoveryAudit
from biomem.recovery.engine import RecoveryEngine
from biomem.recovery.processes import ProcessRegistry, own_temp_dir
from biomem.recovery.rules import Observation
from biomem.recovery.signals import LiveSignals
from biomem.resilience.clock import Clock

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.config.tree import RecoverySettings
    from biomem.health.monitor import HealthMonitor
    from biomem.orchestrator import Orchestrator

__all__ = [
    "QuietSignals",
    "RecoveryService",
    "escalator_for",
    "manual_engine",
    "rules_document",
]

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
    """An engine for ``biomem recovery run``: this process's resources, no evaluation loop.

    It waits for the commands it starts (ending them past their deadline).
    """
    clock = app.guards.clock
    return RecoveryEngine(
        app=app,
        signals=QuietSignals(),
        audit=RecoveryAudit(app.store),
        processes=ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock),
        escalator=LogEscalator(),
        orchestrator=orchestrator,
        log_file=log_file(),
        wait_for_commands=True,
    )


def rules_document(
    settings: RecoverySettings,
    rules: Sequence[RecoveryRule],
    states: Mapping[str, PersistedState],
    *,
    enabled: bool | None = None,
    dry_run: bool | None = None,
) -> dict[str, Any]:
    """The switches and every rule with its saved state: ``recovery rules`` and GET /recovery/rules.

    Times in the state are wall-clock epoch seconds.
    """
    out = []
    for rule in rules:
        item: dict[str, Any] = rule.model_dump(mode="json", exclude={"action"})
        saved = states.get(rule.name)
        item["state"] = (
            None
            if saved is None
            else {
                "attempts": list(saved.attempts),
                "cooldown_until": saved.cooldown_until,
                "incident_id": saved.incident_id,
                "escalated": saved.escalated,
            }
        )
        out.append(item)
    return {
        "enabled": settings.enabled if enabled is None else enabled,
        "dry_run": settings.dry_run if dry_run is None else dry_run,
        "max_unhealthy_share": settings.max_unhealthy_share,
        "rules": out,
    }


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

    # What the HTTP routes ask (biomem.recovery.routes.RecoveryControl).

    def rules(self, *, wait_s: float) -> dict[str, Any]:
        """The engine's switches and rules, with the state it holds now.

        Raises:
            RecoveryBusyError: an evaluation in progress outlasted ``wait_s``.
        """
        engine = self.engine
        return rules_document(
            engine.settings,
            engine.rules,
            engine.saved_states(wait_s=wait_s),
            enabled=engine.enabled,
            dry_run=engine.dry_run,
        )

    def history(self, *, limit: int, rule: str | None) -> list[dict[str, Any]]:
        """The audit, newest first (what waits in memory is written first)."""
        return self.audit.history(limit=limit, rule=rule)

    def run_rule(self, name: str, *, dry_run: bool, wait_s: float) -> dict[str, Any]:
        """An operator's run of one rule in the daemon; RECOVERY_DRY_RUN still holds.

        Returns ``{"rule", "dry_run", "decisions"}``.

        Raises:
            UnknownRuleError, RecoveryBusyError: as :meth:`RecoveryEngine.run_rule`.
        """
        engine = self.engine
        dry = dry_run or engine.dry_run
        records = engine.run_rule(name, dry_run=dry, wait_s=wait_s)
        return {"rule": name, "dry_run": dry, "decisions": [r.as_dict() for r in records]}

    def counts(self) -> dict[tuple[str, str, str], int]:
        """biomem_recovery_actions_total by (rule, action, result)."""
        return self.engine.counts()

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        """Stop evaluating, end commands still running (audited), write what the audit holds."""
        self.engine.stop()
        # Nobody collects a command after the daemon exits: end it, and say so.
        running = [w.pid for w in self.processes.workers()]
        if running:
            self.processes.terminate(running, grace_s=self.engine.settings.worker_grace_seconds)
        self.engine.collect_commands()
        self.processes.close()
        if not self.audit.flush():
            log.warning("recovery_audit_unwritten_at_stop")
