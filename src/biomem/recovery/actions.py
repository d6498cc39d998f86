"""Recovery actions: small task objects that plan exactly, then do exactly what they planned.

Each action has a name and two steps. :meth:`Action.plan` looks at the
process and says what it would do — the action, its target and its
arguments — or raises :class:`ActionUnavailable` (no PostgreSQL configured,
no restart command, no scheduler in this process). A dry run stops there
and records the plan. :meth:`Action.run` then does it and reports what it
did; an action that fails raises (a biomem error or an ``OSError``) or
returns ``ok=False``, and the engine records it as failed. An action that
starts a command does not wait for it: the engine is never held up by a
process it started (see :mod:`biomem.recovery.processes`).

The actions themselves live in three modules by what they touch: the data
stores and dead letters, the process's own resources, and the stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from biomem.config.recovery import ACTION_NAMES, RecoveryRule
from biomem.logfile import LogFile
from biomem.logging import get_logger
from biomem.recovery.processes import ProcessRegistry
from biomem.recovery.rules import Observation, TriggerResult
from biomem.resilience.clock import Clock

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.config.tree import RecoverySettings
    from biomem.orchestrator import Orchestrator

__all__ = [
    "Action",
    "ActionContext",
    "ActionPlan",
    "ActionResult",
    "ActionUnavailable",
    "CallableEscalator",
    "Escalator",
    "LogEscalator",
    "build_actions",
]

log = get_logger(__name__)


class ActionUnavailable(Exception):
    """The action cannot be done in this process; the message says why."""


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """Exactly what an action would do: rendered in a dry run, done otherwise."""

    action: str
    target: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did.

    ``command`` is the pid of a process the action started through the
    registry and left running (the restart command): the action is audited as
    ``started``, and the command's end as ``done`` or ``failed`` once it is seen.
    """

    ok: bool
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    command: int | None = None


class Escalator(Protocol):
    """Raises a critical alert for a rule whose attempts are used up."""

    def escalate(self, *, rule: str, component: str, summary: str) -> None: ...


class LogEscalator:
    """Escalation when no alert service takes it: a critical log event (and the audit row)."""

    def escalate(self, *, rule: str, component: str, summary: str) -> None:
        log.critical("recovery_escalated", rule=rule, component=component, summary=summary)


class CallableEscalator:
    """Adapts a bound ``escalate(*, rule, component, summary)`` of another object."""

    def __init__(self, escalate: Callable[..., object]) -> None:
        self._escalate = escalate

    def escalate(self, *, rule: str, component: str, summary: str) -> None:
        self._escalate(rule=rule, component=component, summary=summary)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext:
    """What an action may touch, and why it runs.

    Attributes:
        orchestrator: the schedules and stage runs; None when this process has none.
        trigger: the trigger's result (its target, e.g. the stuck stage); for a
            manual run, a FIRED result saying so.
    """

    app: App
    settings: RecoverySettings
    rule: RecoveryRule
    observation: Observation
    trigger: TriggerResult
    processes: ProcessRegistry
    escalator: Escalator
    clock: Clock
    orchestrator: Orchestrator | None = None
    log_file: LogFile | None = None


class Action(Protocol):
    """One recovery action."""

    name: str

    def plan(self, ctx: ActionContext) -> ActionPlan:
        """What :meth:`run` would do now; raises :class:`ActionUnavailable`."""
        ...

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        """Do what ``plan`` says and report it."""
        ...


def build_actions() -> dict[str, Action]:
    """Every action by name (one instance each; they keep no state of their own)."""
    # Here, not at the top: the action modules import this one.
    from biomem.recovery.local_actions import LOCAL_ACTIONS
    from biomem.recovery.stage_actions import STAGE_ACTIONS
    from biomem.recovery.store_actions import STORE_ACTIONS

    actions: dict[str, Action] = {}
    for action in (*STORE_ACTIONS, *LOCAL_ACTIONS, *STAGE_ACTIONS):
        actions[action.name] = action
    missing = set(ACTION_NAMES) ^ set(actions)
    if missing:  # the configuration names what the engine implements, exactly
        raise RuntimeError(f"recovery actions out of step with the configuration: {missing}")
    return actions
