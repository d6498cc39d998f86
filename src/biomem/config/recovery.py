"""The ``[recovery]`` section of the TOML file: engine knobs and rules, and the default rules.

A rule says *when* (a trigger), *what* (actions in order), *how often*
(cooldown with jitter, attempts per rolling window) and *what then* (the
escalation actions once the attempts are used up, and the actions run when
the incident is over). The default rules below always apply; a
``[[recovery.rules]]`` entry with the name of a default rule overrides only
the keys it gives (``enabled = false`` turns one off), and an entry with a new
name adds a rule (it must then name its component and actions).

Action and stage names are spelled out here, in the configuration layer, so
a typo stops the program at start-up; a test checks that they match the
actions the engine implements and the stages the pipeline has.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_RULES",
    "RESOURCE_NAMES",
    "STAGE_NAMES",
    "TRIGGER_KINDS",
    "RecoveryFileSettings",
    "RecoveryRule",
    "effective_rules",
]

ACTION_NAMES: tuple[str, ...] = (
    "cancel_stuck_stage",
    "checkpoint_duckdb",
    "clear_llm_cache",
    "collect_garbage",
    "escalate",
    "pause_stages",
    "remove_temp_files",
    "reopen_duckdb",
    "replay_dead_letters",
    "reset_postgres_pool",
    "restart_ollama",
    "resume_stages",
    "rotate_logs",
    "terminate_stuck_workers",
)
# The placeholder rule schema had one "reconnect" action; it means the component's own.
_RECONNECT = {"postgresql": "reset_postgres_pool", "duckdb": "reopen_duckdb"}

Trigger = Literal[
    "status", "breaker_open", "dead_letters", "resource", "stage_stuck", "worker_stuck"
]
Resource = Literal["memory", "disk", "cpu", "file_descriptors"]
StageName = Literal[
    "ingest",
    "working_memory",
    "short_term",
    "consolidation",
    "long_term",
    "dreams",
    "homeostasis",
    "writeback",
]
BadStatus = Literal["degraded", "unhealthy", "critical"]
TRIGGER_KINDS: tuple[str, ...] = get_args(Trigger)
RESOURCE_NAMES: tuple[str, ...] = get_args(Resource)
STAGE_NAMES: tuple[str, ...] = get_args(StageName)
RuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_actions(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in ACTION_NAMES and n != "reconnect"]
    if unknown:
        known = ", ".join(ACTION_NAMES)
        raise ValueError(f"unknown action(s) {', '.join(unknown)}; known: {known}")
    return names


class RecoveryRule(_Section):
    """One rule: a trigger, actions in order, a cooldown, an attempt limit, escalation."""

    name: RuleName
    component: str = Field(default="", description="the health component the rule is about")
    trigger: Trigger = Field(default="status", description=f"one of {', '.join(TRIGGER_KINDS)}")
    when_status: list[BadStatus] = Field(
        default=["unhealthy", "critical"],
        description="statuses (of the component, or of the resource) that count",
    )
    consecutive_checks: int = Field(
        default=1, ge=1, le=1000, description="checks in a row in those statuses, 1 to 1000"
    )
    open_seconds: float = Field(
        default=300, gt=0, description="breaker_open: seconds the breaker has not closed"
    )
    dead_letters_above: int = Field(
        default=100, ge=0, description="dead_letters: pending letters above this number"
    )
    resource: Resource | None = Field(
        default=None, description=f"resource: one of {', '.join(RESOURCE_NAMES)}"
    )
    stuck_seconds: float = Field(
        default=7200, gt=0, description="stage_stuck: seconds one stage run may take"
    )
    stages: list[StageName] = Field(
        default=[], description="stages watched (stage_stuck) or paused/resumed; empty: all"
    )
    action: str | None = Field(default=None, description="one action (older spelling of actions)")
    actions: list[str] = Field(default=[], description="actions run in order")
    resolve_actions: list[str] = Field(default=[], description="actions run when it is over")
    escalation_actions: list[str] = Field(
        default=["escalate"], description="actions run once per incident when attempts run out"
    )
    cooldown_seconds: float = Field(default=300, ge=0, description="seconds, 0 or more")
    cooldown_jitter: float = Field(
        default=0.1, ge=0, le=1, description="extra share of the cooldown, drawn at random, 0 to 1"
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="1 to 100 per window")
    window_seconds: float = Field(
        default=3600, gt=0, description="the rolling window attempts are counted in, seconds"
    )
    enabled: bool = True

    @field_validator("actions", "resolve_actions", "escalation_actions")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        return _check_actions(names)

    @field_validator("action")
    @classmethod
    def _known_one(cls, name: str | None) -> str | None:
        return None if name is None else _check_actions([name])[0]

    def complete(self) -> RecoveryRule:
        """This rule with its single ``action`` folded into ``actions`` and aliases resolved.

        Raises:
            ValueError: something a working rule needs is missing.
        """
        if self.action is not None and self.actions:
            raise ValueError(f"rule {self.name}: give action or actions, not both")
        actions = [self.action] if self.action is not None else list(self.actions)
        if not self.component:
            raise ValueError(f"rule {self.name}: component is required")
        if not actions:
            raise ValueError(f"rule {self.name}: actions are required")
        if self.trigger == "resource" and self.resource is None:
            raise ValueError(f"rule {self.name}: a resource trigger needs resource")

        def resolve(names: list[str]) -> list[str]:
            out = []
            for name in names:
                if name == "reconnect":
                    if self.component not in _RECONNECT:
                        raise ValueError(
                            f"rule {self.name}: reconnect applies to postgresql or duckdb"
                        )
                    name = _RECONNECT[self.component]
                out.append(name)
            return out

        return self.model_copy(
            update={
                "action": None,
                "actions": resolve(actions),
                "resolve_actions": resolve(self.resolve_actions),
                "escalation_actions": resolve(self.escalation_actions),
            }
        )


def _rule(**fields: object) -> RecoveryRule:
    return RecoveryRule.model_validate(fields)


# Documented, key for key, in docs/config.example.toml (a test holds the two equal).
DEFAULT_RULES: tuple[RecoveryRule, ...] = (
    _rule(
        name="postgres_pool_reset",
        component="postgresql",
        when_status=["unhealthy", "critical"],
        consecutive_checks=3,
        actions=["reset_postgres_pool"],
        cooldown_seconds=120,
        max_attempts=3,
    ),
    _rule(
        name="postgres_breaker_stuck_open",
        component="postgresql",
        trigger="breaker_open",
        open_seconds=900,
        actions=["reset_postgres_pool"],
        cooldown_seconds=900,
        max_attempts=2,
    ),
    _rule(
        name="duckdb_reopen",
        component="duckdb",
        when_status=["unhealthy", "critical"],
        consecutive_checks=2,
        actions=["checkpoint_duckdb", "reopen_duckdb"],
        cooldown_seconds=60,
        max_attempts=5,
    ),
    _rule(
        name="ollama_restart",
        component="ollama",
        when_status=["unhealthy", "critical"],
        consecutive_checks=5,
        actions=["restart_ollama", "clear_llm_cache"],
        cooldown_seconds=300,
        max_attempts=3,
    ),
    _rule(
        name="memory_pressure",
        component="system_resources",
        trigger="resource",
        resource="memory",
        when_status=["critical"],
        consecutive_checks=2,
        actions=["collect_garbage", "clear_llm_cache", "remove_temp_files"],
        cooldown_seconds=300,
        max_attempts=6,
    ),
    _rule(
        name="disk_pressure",
        component="system_resources",
        trigger="resource",
        resource="disk",
        when_status=["critical"],
        consecutive_checks=2,
        actions=["remove_temp_files", "rotate_logs"],
        cooldown_seconds=600,
        max_attempts=3,
    ),
    _rule(
        name="heavy_stages_pause",
        component="system_resources",
        when_status=["critical"],
        consecutive_checks=2,
        stages=["consolidation", "dreams"],
        actions=["pause_stages"],
        resolve_actions=["resume_stages"],
        escalation_actions=[],
        cooldown_seconds=600,
        max_attempts=3,
    ),
    _rule(
        name="dead_letter_backlog",
        component="pipeline",
        trigger="dead_letters",
        dead_letters_above=100,
        actions=["replay_dead_letters"],
        cooldown_seconds=300,
        max_attempts=6,
    ),
    _rule(
        name="stage_stuck",
        component="pipeline",
        trigger="stage_stuck",
        stuck_seconds=7200,
        actions=["cancel_stuck_stage"],
        cooldown_seconds=600,
        max_attempts=3,
    ),
    _rule(
        name="workers_stuck",
        component="pipeline",
        trigger="worker_stuck",
        actions=["terminate_stuck_workers"],
        cooldown_seconds=60,
        max_attempts=5,
    ),
)


def effective_rules(configured: list[RecoveryRule]) -> list[RecoveryRule]:
    """The default rules with the configured ones laid over them by name, completed.

    A configured rule named like a default one changes only the keys it sets;
    one with a new name is added after the defaults.

    Raises:
        ValueError: a name is given twice, or a rule misses what it needs.
    """
    seen: set[str] = set()
    for rule in configured:
        if rule.name in seen:
            raise ValueError(f"rule {rule.name} is given twice")
        seen.add(rule.name)
    overrides = {rule.name: rule for rule in configured}
    merged: list[RecoveryRule] = []
    for default in DEFAULT_RULES:
        override = overrides.pop(default.name, None)
        if override is None:
            merged.append(default)
            continue
        given = override.model_dump(include=override.model_fields_set)
        if "action" in given:
            given.setdefault("actions", [])  # a single action replaces the default list
        merged.append(RecoveryRule.model_validate({**default.model_dump(), **given}))
    merged.extend(rule for rule in configured if rule.name in overrides)
    return [rule.complete() for rule in merged]


class RecoveryFileSettings(_Section):
    """The engine's knobs and the rules (see the module docstring)."""

    interval_seconds: float = Field(
        default=5, ge=0.1, le=3600, description="seconds between evaluations, 0.1 to 3600"
    )
    max_unhealthy_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="hold back while more than this share of components is down, in (0, 1]",
    )
    ollama_restart_command: list[str] = Field(
        default=[], description='an argv list run without a shell, e.g. ["systemctl", "restart"]'
    )
    command_timeout_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="a command's deadline, 0 to 3600 s: running longer, it is a stuck worker",
    )
    worker_grace_seconds: float = Field(
        default=10, gt=0, le=600, description="SIGTERM to SIGKILL, seconds up to 600"
    )
    stage_cancel_grace_seconds: float = Field(
        default=30, gt=0, le=3600, description="how long a cancelled run may take to stop"
    )
    reschedule_delay_seconds: float = Field(
        default=30, ge=0, le=86400, description="a cancelled stage runs again after, seconds"
    )
    log_keep: int = Field(default=5, ge=1, le=1000, description="rotated log files kept, 1 to 1000")
    audit_keep_days: float = Field(default=30, gt=0, description="audit rows kept, days")
    rules: list[RecoveryRule] = Field(default_factory=list)

    @field_validator("ollama_restart_command")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        if argv and not argv[0].strip():
            raise ValueError("the command's first element must name a program")
        return argv

    @model_validator(mode="after")
    def _rules_complete(self) -> RecoveryFileSettings:
        effective_rules(self.rules)  # raises with the rule's name when one is incomplete
        return self

    def active_rules(self) -> list[RecoveryRule]:
        """Every rule in effect: the defaults with the configured ones laid over them."""
        return effective_rules(self.rules)
