"""Automated recovery: rules with triggers, real actions, cooldowns, escalation, dry run, audit.

See :mod:`biomem.recovery.engine` for the loop, :mod:`biomem.recovery.rules`
for the triggers, :mod:`biomem.recovery.decisions` for the pure decisions,
:mod:`biomem.recovery.actions` for the action protocol,
:mod:`biomem.recovery.processes` for the commands biomem starts,
:mod:`biomem.recovery.routes` for the daemon's HTTP routes, and
:mod:`biomem.config.recovery` for the rules' configuration and defaults.
"""

from __future__ import annotations

from biomem.recovery.actions import (
    Action,
    ActionContext,
    ActionPlan,
    ActionResult,
    ActionUnavailable,
    CallableEscalator,
    Escalator,
    LogEscalator,
    build_actions,
)
from biomem.recovery.audit import AuditRecord, PersistedState, RecoveryAudit
from biomem.recovery.decisions import RuleState, Verdict
from biomem.recovery.engine import RecoveryBusyError, RecoveryEngine, UnknownRuleError
from biomem.recovery.processes import (
    CommandResult,
    ProcessRegistry,
    TerminateReport,
    WorkerInfo,
    own_temp_dir,
)
from biomem.recovery.rules import (
    Fired,
    Observation,
    StageRun,
    TriggerResult,
    Worker,
    describe_trigger,
    evaluate,
)
from biomem.recovery.runner import ActionRunner
from biomem.recovery.service import (
    QuietSignals,
    RecoveryService,
    escalator_for,
    manual_engine,
    rules_document,
)
from biomem.recovery.signals import LiveSignals, SignalSource

__all__ = [
    "Action",
    "ActionContext",
    "ActionPlan",
    "ActionResult",
    "ActionRunner",
    "ActionUnavailable",
    "AuditRecord",
    "CallableEscalator",
    "CommandResult",
    "Escalator",
    "Fired",
    "LiveSignals",
    "LogEscalator",
    "Observation",
    "PersistedState",
    "ProcessRegistry",
    "QuietSignals",
    "RecoveryAudit",
    "RecoveryBusyError",
    "RecoveryEngine",
    "RecoveryService",
    "RuleState",
    "SignalSource",
    "StageRun",
    "TerminateReport",
    "TriggerResult",
    "UnknownRuleError",
    "Verdict",
    "Worker",
    "WorkerInfo",
    "build_actions",
    "describe_trigger",
    "escalator_for",
    "evaluate",
    "manual_engine",
    "own_temp_dir",
    "rules_document",
]
