"""The engine on a fake clock: acting, cooling down, attempt limits, escalation, guard, dry run,
state across a restart, audit and metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from biomem.app import App
from biomem.health.model import Status
from biomem.health.monitor import HealthMonitor
from biomem.metrics import build_registry
from biomem.recovery import (
    ActionContext,
    ActionPlan,
    ActionResult,
    RecoveryAudit,
    RecoveryBusyError,
    UnknownRuleError,
)
from biomem.resilience.clock import FakeClock
from tests.support.recovery import (
    RecordingAction,
    RecordingEscalator,
    ScriptedSignals,
    build_engine,
    make_app,
    outcomes,
    recording_actions,
    rule,
)

H, U, C = Status.HEALTHY, Status.UNHEALTHY, Status.CRITICAL


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[App]:
    application = make_app(monkeypatch, clock)
    try:
        yield application
    finally:
        application.close()


def test_rule_acts_after_n_checks_then_cools_down(app: App, clock: FakeClock) -> None:
    """Three unhealthy checks in a row run the action once; then the cooldown holds it."""
    signals = ScriptedSignals()
    reset = RecordingAction("reset_postgres_pool")
    engine = build_engine(
        app,
        signals,
        clock,
        [rule(consecutive_checks=3)],
        actions=recording_actions(reset_postgres_pool=reset),
    )
    for _ in range(2):
        signals.check(postgresql=U)
        assert engine.tick() == []
    signals.check(postgresql=U)
    assert outcomes(engine.tick()) == [("reset_postgres_pool", "done", None)]
    assert reset.runs == [("pg", "postgresql unhealthy for 3 check(s) in a row")]
    clock.advance(30)
    assert outcomes(engine.tick()) == [("reset_postgres_pool", "skipped", "cooldown")]
    clock.advance(10)
    engine.tick()
    history = RecoveryAudit(app.store).history(rule="pg")
    assert [(h["outcome"], h["reason"], h["occurrences"]) for h in history] == [
        ("skipped", "cooldown", 2),  # one row for the repeated skip, counted
        ("done", None, 1),
    ]
    assert len(reset.runs) == 1


def test_attempts_used_up_escalate_once_per_incident(app: App, clock: FakeClock) -> None:
    """After max_attempts the escalation runs once; a new incident escalates once more."""
    signals = ScriptedSignals()
    escalator = RecordingEscalator()
    actions = recording_actions()
    actions.pop("escalate")  # the real escalate action, through the recording escalator
    from biomem.recovery import build_actions

    actions["escalate"] = build_actions()["escalate"]
    engine = build_engine(
        app, signals, clock, [rule(max_attempts=2, cooldown_seconds=60)],
        actions=actions, escalator=escalator,
    )  # fmt: skip
    signals.check(postgresql=U)
    seen = []
    for _ in range(5):
        seen += outcomes(engine.tick())
        clock.advance(61)
    assert seen == [
        ("reset_postgres_pool", "done", None),
        ("reset_postgres_pool", "done", None),
        ("escalate", "done", None),
        ("reset_postgres_pool", "skipped", "attempt_limit"),
        ("reset_postgres_pool", "skipped", "attempt_limit"),
        ("reset_postgres_pool", "skipped", "attempt_limit"),
    ]
    assert len(escalator.calls) == 1
    assert escalator.calls[0]["rule"] == "pg" and "2 attempt(s)" in escalator.calls[0]["summary"]
    signals.check(postgresql=H)  # the incident ends; the attempts stay in their window
    assert engine.tick() == []
    signals.check(postgresql=U)
    assert outcomes(engine.tick()) == [
        ("escalate", "done", None),
        ("reset_postgres_pool", "skipped", "attempt_limit"),
    ]
    assert len(escalator.calls) == 2


def test_guard_holds_back_when_most_components_are_down(app: App, clock: FakeClock) -> None:
    """With three of four components down at once, nothing is done: skipped for the guard."""
    signals = ScriptedSignals()
    reset = RecordingAction("reset_postgres_pool")
    engine = build_engine(
        app, signals, clock, [rule()], actions=recording_actions(reset_postgres_pool=reset)
    )
    signals.check(postgresql=U, duckdb=C, ollama=U, system_resources=H)
    (record,) = engine.tick()
    assert (record.outcome, record.reason) == ("skipped", "guard")
    assert "duckdb, ollama, postgresql" in record.summary
    assert reset.runs == []
    signals.check(duckdb=H, ollama=H)  # the shared cause is gone: the rule acts
    assert outcomes(engine.tick()) == [("reset_postgres_pool", "done", None)]


def test_guard_spares_the_rules_about_the_machine_itself(app: App, clock: FakeClock) -> None:
    """A full disk fails the store and the pipeline at once: the guard holds the DuckDB rule
    back, while the disk rule — acting on the shared cause — runs."""
    signals = ScriptedSignals()
    actions = recording_actions()
    rules = [
        rule("duckdb", component="duckdb", actions=["reopen_duckdb"]),
        rule(
            "disk", component="system_resources", trigger="resource", resource="disk",
            when_status=["critical"], actions=["remove_temp_files", "rotate_logs"],
        ),
    ]  # fmt: skip
    engine = build_engine(app, signals, clock, rules, actions=actions)
    signals.check(duckdb=C, pipeline=U, system_resources=C, postgresql=H)
    signals.resources["disk"] = [C]
    records = engine.tick()
    assert sorted((r.rule, r.action, r.outcome, r.reason) for r in records) == [
        ("disk", "remove_temp_files", "done", None),
        ("disk", "rotate_logs", "done", None),
        ("duckdb", "reopen_duckdb", "skipped", "guard"),
    ]


@pytest.mark.parametrize(
    ("enabled", "rule_enabled", "summary"),
    [
        pytest.param(False, True, "automated recovery disabled", id="switch"),
        pytest.param(True, False, "rule disabled", id="rule"),
    ],
)
def test_disabled_recovery_decides_but_does_nothing(
    app: App, clock: FakeClock, enabled: bool, rule_enabled: bool, summary: str
) -> None:
    """AUTOMATED_RECOVERY_ENABLED=false or enabled=false: the decision is audited as disabled."""
    signals = ScriptedSignals()
    reset = RecordingAction("reset_postgres_pool")
    engine = build_engine(
        app, signals, clock, [rule(enabled=rule_enabled)], enabled=enabled,
        actions=recording_actions(reset_postgres_pool=reset),
    )  # fmt: skip
    signals.check(postgresql=U)
    (record,) = engine.tick()
    assert (record.reason, record.summary) == ("disabled", summary)
    assert reset.runs == []


def test_dry_run_renders_every_decision_and_changes_nothing(app: App, clock: FakeClock) -> None:
    """In a dry run the plan (action, target, arguments) is audited; no action runs, no state."""
    signals = ScriptedSignals()
    actions = recording_actions()
    engine = build_engine(
        app, signals, clock, [rule(actions=["checkpoint_duckdb", "reopen_duckdb"])],
        actions=actions, dry_run=True,
    )  # fmt: skip
    signals.check(postgresql=U)
    records = engine.tick()
    assert outcomes(records) == [
        ("checkpoint_duckdb", "skipped", "dry_run"),
        ("reopen_duckdb", "skipped", "dry_run"),
    ]
    assert records[0].target == "postgresql" and records[0].arguments == {"rule": "pg"}
    assert records[0].summary == "dry run: would checkpoint_duckdb on postgresql"
    assert all(not a.runs for a in actions.values())  # type: ignore[attr-defined]
    clock.advance(1)
    # The dry run simulates its cooldown, in memory only: the stored state is untouched.
    assert outcomes(engine.tick()) == [("checkpoint_duckdb+reopen_duckdb", "skipped", "cooldown")]
    assert RecoveryAudit(app.store).load_states() == {}


def test_state_survives_a_restart(
    monkeypatch: pytest.MonkeyPatch, app: App, clock: FakeClock
) -> None:
    """Attempts, the cooldown and the escalated incident are read back after close and reopen."""
    signals = ScriptedSignals()
    escalator = RecordingEscalator()
    r = rule(max_attempts=1, cooldown_seconds=300)
    first = build_engine(app, signals, clock, [r], escalator=escalator)
    signals.check(postgresql=U)
    assert outcomes(first.tick()) == [("reset_postgres_pool", "done", None)]
    app.close()

    reopened = make_app(monkeypatch, clock)
    try:
        second = build_engine(reopened, signals, clock, [r], escalator=escalator)
        assert second.state("pg").incident_id == first.state("pg").incident_id
        clock.advance(100)
        assert outcomes(second.tick()) == [("reset_postgres_pool", "skipped", "cooldown")]
        clock.advance(250)  # cooldown over; the one attempt is still in its window
        assert outcomes(second.tick()) == [
            ("escalate", "done", None),
            ("reset_postgres_pool", "skipped", "attempt_limit"),
        ]
        reopened.close()
        third_app = make_app(monkeypatch, clock)
        third = build_engine(third_app, signals, clock, [r], escalator=escalator)
        clock.advance(10)
        # Escalated in this incident before the restart: not again.
        assert outcomes(third.tick()) == [("reset_postgres_pool", "skipped", "attempt_limit")]
        third_app.close()
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("later_s", "expected"),
    [
        pytest.param(100, [("reset_postgres_pool", "skipped", "cooldown")], id="cooldown"),
        pytest.param(
            400,
            [
                ("escalate", "skipped", "dry_run"),
                ("reset_postgres_pool", "skipped", "attempt_limit"),
            ],
            id="attempt-limit",
        ),
    ],
)
def test_a_dry_run_after_a_restart_skips_what_a_real_run_would(
    monkeypatch: pytest.MonkeyPatch,
    app: App,
    clock: FakeClock,
    later_s: float,
    expected: list[tuple[str, str, str | None]],
) -> None:
    """A dry-run engine reads the saved cooldown and attempts (never writes them): no plan a
    real run would skip is rendered."""
    signals = ScriptedSignals()
    r = rule(max_attempts=1, cooldown_seconds=300)
    real = build_engine(app, signals, clock, [r])
    signals.check(postgresql=U)
    assert outcomes(real.tick()) == [("reset_postgres_pool", "done", None)]
    app.close()

    reopened = make_app(monkeypatch, clock)
    try:
        saved = RecoveryAudit(reopened.store).load_states()
        actions = recording_actions()
        dry = build_engine(reopened, signals, clock, [r], actions=actions, dry_run=True)
        assert dry.state("pg").incident_id == saved["pg"].incident_id
        clock.advance(later_s)
        assert outcomes(dry.tick()) == expected
        assert all(not a.runs for a in actions.values())  # type: ignore[attr-defined]
        assert RecoveryAudit(reopened.store).load_states() == saved
    finally:
        reopened.close()


class _Blocking:
    """A real action that holds its evaluation until the test lets it go."""

    name = "reset_postgres_pool"

    def __init__(self) -> None:
        self.running, self.release = threading.Event(), threading.Event()

    def plan(self, ctx: ActionContext) -> ActionPlan:
        return ActionPlan(self.name, "pool", {})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        self.running.set()
        self.release.wait(10)
        return ActionResult(True, "done at last")


def test_a_manual_run_waits_only_so_long_for_an_evaluation_in_progress(
    app: App, clock: FakeClock
) -> None:
    """While a tick acts, run_rule(wait_s=...) gives up with RecoveryBusyError; after, it runs."""
    signals = ScriptedSignals()
    blocking = _Blocking()
    engine = build_engine(
        app, signals, clock, [rule()], actions=recording_actions(reset_postgres_pool=blocking)
    )
    signals.check(postgresql=U)
    tick = threading.Thread(target=engine.tick)
    tick.start()
    try:
        assert blocking.running.wait(10)
        with pytest.raises(RecoveryBusyError, match="busy"):
            engine.run_rule("pg", wait_s=0.05)
    finally:
        blocking.release.set()
        tick.join(10)
    assert outcomes(engine.run_rule("pg", wait_s=5)) == [("reset_postgres_pool", "done", None)]


def test_resolve_actions_run_when_the_incident_ends(app: App, clock: FakeClock) -> None:
    """A rule that paused stages resumes them once its component is healthy again."""
    signals = ScriptedSignals()
    actions = recording_actions()
    r = rule(
        "heavy",
        component="system_resources",
        when_status=["critical"],
        actions=["pause_stages"],
        resolve_actions=["resume_stages"],
    )
    engine = build_engine(app, signals, clock, [r], actions=actions)
    signals.check(system_resources=C)
    assert outcomes(engine.tick()) == [("pause_stages", "done", None)]
    signals.check(system_resources=H)
    records = engine.tick()
    assert outcomes(records) == [("resume_stages", "done", None)]
    assert records[0].phase == "resolve"
    assert engine.tick() == []  # no incident, nothing to resolve


def test_an_unavailable_action_is_skipped_and_the_next_still_runs(
    app: App, clock: FakeClock
) -> None:
    """restart_ollama without a command is skipped as unavailable; clear_llm_cache runs."""
    signals = ScriptedSignals()
    actions = recording_actions(
        restart_ollama=RecordingAction("restart_ollama", unavailable="no restart command")
    )
    r = rule("ol", component="ollama", actions=["restart_ollama", "clear_llm_cache"])
    engine = build_engine(app, signals, clock, [r], actions=actions)
    signals.check(ollama=U)
    records = engine.tick()
    assert outcomes(records) == [
        ("restart_ollama", "skipped", "unavailable"),
        ("clear_llm_cache", "done", None),
    ]
    assert records[0].summary == "no restart command"


class _Exploding:
    name = "reset_postgres_pool"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        return ActionPlan(self.name, "pool", {})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        raise RuntimeError("password=hunter2 went wrong at postgresql://app:hunter2@db/x")


def test_a_crashing_action_is_audited_as_failed_redacted_and_the_engine_goes_on(
    app: App, clock: FakeClock
) -> None:
    """The error is in the audit without the secret; later ticks still evaluate."""
    signals = ScriptedSignals()
    engine = build_engine(
        app, signals, clock, [rule()], actions=recording_actions(reset_postgres_pool=_Exploding())
    )
    signals.check(postgresql=U)
    (record,) = engine.tick()
    assert record.outcome == "failed"
    stored = RecoveryAudit(app.store).history()[0]
    assert "hunter2" not in str(stored) and "RuntimeError" in stored["summary"]
    clock.advance(61)
    assert outcomes(engine.tick()) == [("reset_postgres_pool", "failed", None)]


def test_a_signal_source_that_fails_does_not_stop_the_engine(app: App, clock: FakeClock) -> None:
    """An observation that raises costs that evaluation only."""

    class Broken(ScriptedSignals):
        def observe(self, now: float):  # type: ignore[no-untyped-def]
            raise RuntimeError("monitor gone")

    engine = build_engine(app, Broken(), clock, [rule()])
    assert engine.tick() == []


def test_manual_run_ignores_trigger_and_cooldown_and_counts_no_attempt(
    app: App, clock: FakeClock
) -> None:
    """`recovery run RULE` runs the actions now, audited as manual; unknown names are refused."""
    signals = ScriptedSignals()
    reset = RecordingAction("reset_postgres_pool")
    engine = build_engine(
        app, signals, clock, [rule()], actions=recording_actions(reset_postgres_pool=reset)
    )
    records = engine.run_rule("pg")
    assert outcomes(records) == [("reset_postgres_pool", "done", None)]
    assert records[0].phase == "manual" and records[0].trigger == "manual run"
    assert engine.state("pg").attempts == []
    assert outcomes(engine.run_rule("pg", dry_run=True)) == [
        ("reset_postgres_pool", "skipped", "dry_run")
    ]
    assert len(reset.runs) == 1
    with pytest.raises(UnknownRuleError, match="known: pg"):
        engine.run_rule("nope")


def test_decisions_are_counted_for_the_metric(app: App, clock: FakeClock) -> None:
    """biomem_recovery_actions_total{rule,action,result} counts each decision."""
    signals = ScriptedSignals()
    engine = build_engine(app, signals, clock, [rule()])
    signals.check(postgresql=U)
    engine.tick()
    engine.tick()
    engine.tick()
    registry = build_registry(
        app, HealthMonitor([]), process_metrics=False, recovery_counts=engine.counts
    )
    sample = registry.get_sample_value
    labels = {"rule": "pg", "action": "reset_postgres_pool"}
    assert sample("biomem_recovery_actions_total", {**labels, "result": "done"}) == 1
    assert sample("biomem_recovery_actions_total", {**labels, "result": "cooldown"}) == 2
