"""Running a rule's actions: plan, then do (or only render, in a dry run), audit, count.

Every action's outcome becomes one audit row — done, failed, or skipped with
the reason (``unavailable``, ``dry_run``) — and one count of
``biomem_recovery_actions_total{rule,action,result}``. An action that raises
is recorded as failed with its error and the next action still runs: a
rule's actions are independent steps (a checkpoint that fails does not stop
the reopen that may fix it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from biomem.config.recovery import RecoveryRule
from biomem.logfile import LogFile
from biomem.logging import get_logger
from biomem.recovery.actions import Action, ActionContext, ActionUnavailable, Escalator
from biomem.recovery.audit import AuditRecord, RecoveryAudit
from biomem.recovery.processes import ProcessRegistry
from biomem.recovery.rules import Observation, TriggerResult
from biomem.resilience.clock import Clock

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.config.tree import RecoverySettings
    from biomem.orchestrator import Orchestrator

__all__ = ["ActionRunner"]

log = get_logger(__name__)


class ActionRunner:
    """Runs actions for the engine (and for ``biomem recovery run``), auditing each.

    Args:
        dry_run: the default for :meth:`run` (RECOVERY_DRY_RUN).
    """

    def __init__(
        self,
        *,
        app: App,
        settings: RecoverySettings,
        audit: RecoveryAudit,
        processes: ProcessRegistry,
        escalator: Escalator,
        actions: Mapping[str, Action],
        clock: Clock,
        wall_clock: Callable[[], datetime],
        orchestrator: Orchestrator | None = None,
        log_file: LogFile | None = None,
        dry_run: bool = False,
    ) -> None:
        self._app = app
        self.settings = settings
        self._audit = audit
        self._processes = processes
        self._escalator = escalator
        self._actions = dict(actions)
        self._clock = clock
        self._wall = wall_clock
        self._orchestrator = orchestrator
        self._log_file = log_file
        self.dry_run = dry_run
        self._counts_lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Decisions by (rule, action, result) since start."""
        with self._counts_lock:
            return dict(self._counts)

    def _context(
        self, rule: RecoveryRule, obs: Observation, result: TriggerResult
    ) -> ActionContext:
        return ActionContext(
            app=self._app,
            settings=self.settings,
            rule=rule,
            observation=obs,
            trigger=result,
            processes=self._processes,
            escalator=self._escalator,
            clock=self._clock,
            orchestrator=self._orchestrator,
            log_file=self._log_file,
        )

    def run(
        self,
        rule: RecoveryRule,
        names: Sequence[str],
        phase: str,
        obs: Observation,
        result: TriggerResult,
        incident: str | None,
        *,
        dry_run: bool | None = None,
    ) -> list[AuditRecord]:
        dry = self.dry_run if dry_run is None else dry_run
        ctx = self._context(rule, obs, result)
        records = []
        for name in names:
            records.append(self._one(self._actions[name], ctx, phase, incident, dry))
        return records

    def _one(
        self, action: Action, ctx: ActionContext, phase: str, incident: str | None, dry: bool
    ) -> AuditRecord:
        rule, result = ctx.rule, ctx.trigger
        started = time.perf_counter()
        try:
            plan = action.plan(ctx)
        except ActionUnavailable as exc:
            return self.record(
                rule,
                action.name,
                "skipped",
                phase,
                result,
                incident,
                reason="unavailable",
                summary=str(exc),
            )
        except Exception as exc:  # noqa: BLE001 - recorded as failed; the engine goes on
            return self.record(
                rule,
                action.name,
                "failed",
                phase,
                result,
                incident,
                summary=f"could not plan: {type(exc).__name__}: {exc}",
            )
        base: dict[str, Any] = {"target": plan.target, "arguments": plan.arguments}
        if dry:
            return self.record(
                rule,
                action.name,
                "skipped",
                phase,
                result,
                incident,
                reason="dry_run",
                summary=f"dry run: would {action.name} on {plan.target}",
                **base,
            )
        log.warning("recovery_action", rule=rule.name, action=action.name, target=plan.target)
        try:
            done = action.run(plan, ctx)
        except ActionUnavailable as exc:
            return self.record(
                rule,
                action.name,
                "skipped",
                phase,
                result,
                incident,
                reason="unavailable",
                summary=str(exc),
                **base,
            )
        except Exception as exc:  # noqa: BLE001 - a failed action is audited, never raised
            log.error("recovery_action_failed", rule=rule.name, action=action.name, error=str(exc))
            return self.record(
                rule,
                action.name,
                "failed",
                phase,
                result,
                incident,
                summary=f"{type(exc).__name__}: {exc}",
                duration_ms=(time.perf_counter() - started) * 1000,
                **base,
            )
        return self.record(
            rule,
            action.name,
            "done" if done.ok else "failed",
            phase,
            result,
            incident,
            summary=done.summary,
            detail=done.detail,
            duration_ms=(time.perf_counter() - started) * 1000,
            **base,
        )

    def record(
        self,
        rule: RecoveryRule,
        action: str,
        outcome: str,
        phase: str,
        result: TriggerResult,
        incident: str | None,
        **fields: Any,
    ) -> AuditRecord:
        record = AuditRecord(
            at=self._wall(),
            rule=rule.name,
            component=rule.component,
            action=action,
            outcome=outcome,
            phase=phase,
            trigger=result.detail,
            incident_id=incident,
            **fields,
        )
        label = outcome if outcome != "skipped" else str(record.reason)
        with self._counts_lock:
            self._counts[(rule.name, action, label)] += 1
        return self._audit.record(record)
