"""Running a rule's actions: plan, then do (or only render, in a dry run), audit, count.

Every action's outcome becomes one audit row — done, failed, or skipped with
the reason (``unavailable``, ``dry_run``) — and one count of
``biomem_recovery_actions_total{rule,action,result}``. An action that raises
is recorded as failed with its error and the next action still runs: a
rule's actions are independent steps (a checkpoint that fails does not stop
the reopen that may fix it).

An action that starts a command (the Ollama restart) is recorded as
``started`` and the runner remembers the command; :meth:`ActionRunner.collect`
records its end — done when it exited 0 by itself, failed otherwise (a
non-zero exit, or ended by the ``workers_stuck`` rule past its deadline) —
under the same rule, phase and incident. :meth:`ActionRunner.finish` waits
for those ends instead, for a one-off process that must not leave a command
behind.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from biomem.config.recovery import RecoveryRule
from biomem.logfile import LogFile
from biomem.logging import get_logger
from biomem.recovery.actions import Action, ActionContext, ActionUnavailable, Escalator
from biomem.recovery.audit import AuditRecord, RecoveryAudit
from biomem.recovery.processes import CommandResult, ProcessRegistry
from biomem.recovery.rules import Observation, TriggerResult
from biomem.resilience.clock import Clock

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.config.tree import RecoverySettings
    from biomem.orchestrator import Orchestrator

__all__ = ["ActionRunner"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Started:
    """A command an action started: whose end is recorded, and under what."""

    rule: RecoveryRule
    action: str
    phase: str
    trigger: TriggerResult
    incident: str | None
    base: Mapping[str, Any]  # target and arguments of the plan


def _ended(result: CommandResult) -> tuple[bool, str]:
    """Whether the command succeeded, and its end in words."""
    took = f"after {result.seconds:g} s"
    if result.ended_by is not None:
        deadline = result.info.deadline - result.info.started
        return False, f"ran past its {deadline:g} s deadline; ended by {result.ended_by} {took}"
    if result.returncode < 0:
        return False, f"command ended by signal {-result.returncode} {took}"
    return result.returncode == 0, f"command exited {result.returncode} {took}"


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
        self._commands: dict[int, _Started] = {}  # by pid; touched under the engine's lock

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
        outcome = "done" if done.ok else "failed"
        if done.command is not None:
            self._commands[done.command] = _Started(
                rule, action.name, phase, result, incident, base
            )
            outcome = "started"
        return self.record(
            rule,
            action.name,
            outcome,
            phase,
            result,
            incident,
            summary=done.summary,
            detail=done.detail,
            duration_ms=(time.perf_counter() - started) * 1000,
            **base,
        )

    # ----------------------------------------------------------------- commands

    def collect(self) -> list[AuditRecord]:
        """Record the end of every command an action started that has ended since."""
        records = []
        for ended in self._processes.reap():
            started = self._commands.pop(ended.pid, None)
            if started is None:
                continue  # not started by an action (nothing waits for its end)
            ok, summary = _ended(ended)
            records.append(
                self.record(
                    started.rule,
                    started.action,
                    "done" if ok else "failed",
                    started.phase,
                    started.trigger,
                    started.incident,
                    summary=summary,
                    detail={
                        "pid": ended.pid,
                        "exit_code": ended.returncode,
                        "ended_by": ended.ended_by,
                        "overdue": ended.overdue,
                        "seconds": ended.seconds,
                        "output": ended.output[-500:],
                    },
                    duration_ms=ended.seconds * 1000,
                    **started.base,
                )
            )
        return records

    def finish(self) -> list[AuditRecord]:
        """Wait for the commands started to end by their deadlines, end those that do not.

        For a one-off process (``biomem recovery run`` without a daemon): when it
        exits nobody else would collect them. Past its deadline a command is
        terminated here, as the ``workers_stuck`` rule would (SIGTERM, then SIGKILL).
        """
        grace_s = self.settings.worker_grace_seconds
        live = {w.pid: w for w in self._processes.workers()}
        for pid in list(self._commands):
            worker = live.get(pid)
            if worker is None:
                continue
            # The deadline is on the engine's clock; the wait is real time.
            remaining = worker.deadline - self._clock.monotonic()
            if not self._processes.wait(pid, remaining):
                self._processes.terminate([pid], grace_s=grace_s)
        return self.collect()

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
