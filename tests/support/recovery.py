"""Helpers for the recovery tests: an app from the environment, scripted observations,
recording actions and a wall clock that moves with a FakeClock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.config.recovery import ACTION_NAMES, RecoveryRule
from biomem.health.model import Status
from biomem.recovery import (
    Action,
    ActionContext,
    ActionPlan,
    ActionResult,
    ActionUnavailable,
    Observation,
    ProcessRegistry,
    RecoveryAudit,
    RecoveryEngine,
    own_temp_dir,
)
from biomem.resilience.clock import FakeClock

EPOCH = datetime(2026, 3, 1, tzinfo=UTC)


def make_app(monkeypatch: pytest.MonkeyPatch, clock: FakeClock | None = None, **env: str) -> App:
    """An app opened from the (clean) environment plus ``env``."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    return open_app(settings, clock=clock) if clock is not None else open_app(settings)


def wall_of(clock: FakeClock) -> Any:
    """A wall clock that moves with ``clock``."""
    return lambda: EPOCH + timedelta(seconds=clock.monotonic())


def statuses(**by_component: Status) -> dict[str, tuple[Status, ...]]:
    return {name: (status,) for name, status in by_component.items()}


@dataclass
class ScriptedSignals:
    """Observations the test sets: ``history`` per component (oldest first) and the rest."""

    history: dict[str, list[Status]] = field(default_factory=dict)
    resources: dict[str, list[Status]] = field(default_factory=dict)
    breakers_open_s: dict[str, float] = field(default_factory=dict)
    dead_letters: int | None = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, **by_component: Status) -> None:
        """One monitor run: each named component's result is appended to its history."""
        for name, status in by_component.items():
            self.history.setdefault(name, []).append(status)

    def observe(self, now: float) -> Observation:
        return Observation(
            at=now,
            statuses={name: h[-1] for name, h in self.history.items() if h},
            history={name: tuple(h) for name, h in self.history.items()},
            resources={name: tuple(h) for name, h in self.resources.items()},
            breakers_open_s=dict(self.breakers_open_s),
            dead_letters=self.dead_letters,
            **self.extra,
        )


class RecordingAction:
    """A real action (it appends to ``runs``) standing in for one of the named ones."""

    def __init__(self, name: str, *, ok: bool = True, unavailable: str | None = None) -> None:
        self.name = name
        self.ok = ok
        self.unavailable = unavailable
        self.runs: list[tuple[str, str]] = []  # (rule, phase-less trigger detail)

    def plan(self, ctx: ActionContext) -> ActionPlan:
        if self.unavailable is not None:
            raise ActionUnavailable(self.unavailable)
        return ActionPlan(self.name, ctx.rule.component, {"rule": ctx.rule.name})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        self.runs.append((ctx.rule.name, ctx.trigger.detail))
        return ActionResult(self.ok, f"{self.name} ran", {"n": len(self.runs)})


def recording_actions(**overrides: RecordingAction) -> dict[str, Action]:
    actions: dict[str, Action] = {name: RecordingAction(name) for name in ACTION_NAMES}
    actions.update(overrides)
    return actions


class RecordingEscalator:
    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    def escalate(self, *, rule: str, component: str, summary: str) -> None:
        self.calls.append({"rule": rule, "component": component, "summary": summary})


def rule(name: str = "pg", **fields: Any) -> RecoveryRule:
    """A complete rule with test-friendly defaults (no jitter)."""
    base: dict[str, Any] = {
        "name": name,
        "component": "postgresql",
        "actions": ["reset_postgres_pool"],
        "cooldown_seconds": 60,
        "cooldown_jitter": 0.0,
        "max_attempts": 2,
        "window_seconds": 3600,
    }
    base.update(fields)
    return RecoveryRule.model_validate(base).complete()


def build_engine(
    app: App,
    signals: ScriptedSignals,
    clock: FakeClock,
    rules: Sequence[RecoveryRule],
    *,
    actions: dict[str, Action] | None = None,
    escalator: RecordingEscalator | None = None,
    processes: ProcessRegistry | None = None,
    **kwargs: Any,
) -> RecoveryEngine:
    if processes is None:
        processes = ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock)
    return RecoveryEngine(
        app=app,
        signals=signals,
        audit=RecoveryAudit(app.store),
        processes=processes,
        escalator=escalator if escalator is not None else RecordingEscalator(),
        rules=list(rules),
        actions=actions if actions is not None else recording_actions(),
        clock=clock,
        wall_clock=wall_of(clock),
        **kwargs,
    )


def outcomes(records: Iterable[Any]) -> list[tuple[str, str, str | None]]:
    """(action, outcome, reason) of audit records."""
    return [(r.action, r.outcome, r.reason) for r in records]
