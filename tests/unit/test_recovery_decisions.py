"""The engine's pure decisions: cooldown with jitter, rolling attempts, escalation once, guard."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from biomem.health.model import Status
from biomem.recovery.audit import PersistedState
from biomem.recovery.decisions import (
    RuleState,
    Verdict,
    attempts_in_window,
    close_incident,
    cooldown_end,
    decide,
    guard_holds,
    open_incident,
    persisted_state,
    record_attempt,
    restore_state,
    should_escalate,
    skip_summary,
)
from biomem.resilience.clock import FakeClock
from tests.support.recovery import rule

H, D, U, C, K = Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY, Status.CRITICAL, Status.UNKNOWN


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        pytest.param(0.0, 160.0, id="no-jitter-drawn"),
        pytest.param(0.5, 163.0, id="half"),
        pytest.param(0.999, 165.994, id="almost-all"),
    ],
)
def test_cooldown_is_never_shorter_than_configured(draw: float, expected: float) -> None:
    """The jitter only adds: cooldown × (1 + jitter × draw) after now."""
    assert cooldown_end(100.0, 60.0, 0.1, draw) == pytest.approx(expected, abs=0.01)


def test_cooldown_refuses_a_draw_outside_unit_interval() -> None:
    """A draw of 1 or more would exceed the documented bound."""
    with pytest.raises(ValueError, match="draw"):
        cooldown_end(0.0, 60.0, 0.1, 1.0)


def test_attempts_roll_out_of_the_window() -> None:
    """Only attempts younger than the window count; older ones are forgotten."""
    assert attempts_in_window([0.0, 100.0, 3599.0], 3600.0, 3600.0) == [100.0, 3599.0]
    assert attempts_in_window([0.0, 100.0], 3700.5, 3600.0) == []


def test_cooldown_then_attempt_limit_then_run_again_when_the_window_rolls() -> None:
    """On a fake clock: run, cooldown, run, cooldown, limit; an hour on, attempts are back."""
    clock = FakeClock()
    r = rule(cooldown_seconds=60, max_attempts=2, window_seconds=3600)
    state = RuleState()

    def verdict() -> Verdict:
        return decide(state, r, clock.monotonic(), enabled=True, guard=False)

    assert verdict() is Verdict.RUN
    record_attempt(state, r, clock.monotonic(), 0.0)
    clock.advance(59.9)
    assert verdict() is Verdict.COOLDOWN
    clock.advance(0.1)
    assert verdict() is Verdict.RUN
    record_attempt(state, r, clock.monotonic(), 0.0)
    clock.advance(60)
    assert verdict() is Verdict.ATTEMPT_LIMIT
    clock.advance(3600 - 60)  # the first attempt (t=0) has left the window
    assert verdict() is Verdict.RUN


def test_jitter_lengthens_the_cooldown_by_the_draw() -> None:
    """With jitter 0.5 and a draw of 0.5 the 100 s cooldown lasts 125 s."""
    clock = FakeClock()
    r = rule(cooldown_seconds=100, cooldown_jitter=0.5)
    state = RuleState()
    record_attempt(state, r, clock.monotonic(), 0.5)
    clock.advance(124.9)
    assert decide(state, r, clock.monotonic(), enabled=True, guard=False) is Verdict.COOLDOWN
    clock.advance(0.2)
    assert decide(state, r, clock.monotonic(), enabled=True, guard=False) is Verdict.RUN


def test_escalation_once_per_incident() -> None:
    """Attempts used up escalate once; again only in a new incident."""
    clock = FakeClock()
    r = rule(max_attempts=1, cooldown_seconds=0)
    state = RuleState()
    open_incident(state, clock.monotonic(), "first")
    record_attempt(state, r, clock.monotonic(), 0.0)
    verdict = decide(state, r, clock.monotonic(), enabled=True, guard=False)
    assert verdict is Verdict.ATTEMPT_LIMIT
    assert should_escalate(state, verdict)
    state.escalated = True
    assert not should_escalate(state, verdict)  # the next evaluation, same incident
    assert close_incident(state)
    assert open_incident(state, clock.monotonic(), "second")
    assert should_escalate(state, decide(state, r, clock.monotonic(), enabled=True, guard=False))


def test_closing_an_incident_keeps_attempts_and_cooldown() -> None:
    """A flapping component does not earn fresh attempts each time it recovers."""
    r = rule(max_attempts=1, cooldown_seconds=30)
    state = RuleState()
    open_incident(state, 0.0, "x")
    record_attempt(state, r, 0.0, 0.0)
    close_incident(state)
    open_incident(state, 10.0, "y")
    assert decide(state, r, 10.0, enabled=True, guard=False) is Verdict.COOLDOWN
    assert decide(state, r, 40.0, enabled=True, guard=False) is Verdict.ATTEMPT_LIMIT


@pytest.mark.parametrize(
    ("components", "holds"),
    [
        pytest.param([U, C, U, H, H], True, id="three-of-five-down"),
        pytest.param([U, C, H, H, H], False, id="two-of-five-down"),
        pytest.param([U, C, K, K, H], True, id="two-of-three-known-down"),
        pytest.param([U, K, K, K, K], False, id="one-alone-is-not-shared"),
        pytest.param([D, D, D, U, H], False, id="degraded-is-not-down"),
        pytest.param([K, K], False, id="nothing-known"),
    ],
)
def test_guard_holds_back_when_most_components_are_down(
    components: list[Status], holds: bool
) -> None:
    """More than half of the known components unhealthy or critical (and two at least)."""
    assert guard_holds(components, 0.5) is holds


def test_order_of_verdicts_disabled_guard_cooldown_limit() -> None:
    """Disabled beats the guard, which beats the cooldown, which beats the attempt limit."""
    r = rule(max_attempts=1, cooldown_seconds=100)
    state = RuleState()
    record_attempt(state, r, 0.0, 0.0)
    assert decide(state, r, 1.0, enabled=False, guard=True) is Verdict.DISABLED
    off = r.model_copy(update={"enabled": False})
    assert decide(state, off, 1.0, enabled=True, guard=True) is Verdict.DISABLED
    assert decide(state, r, 1.0, enabled=True, guard=True) is Verdict.GUARD
    assert decide(state, r, 1.0, enabled=True, guard=False) is Verdict.COOLDOWN
    assert decide(state, r, 101.0, enabled=True, guard=False) is Verdict.ATTEMPT_LIMIT


def test_guard_spares_rules_about_the_machine() -> None:
    """A rule on system_resources acts on the shared cause: the guard does not hold it."""
    machine = rule(component="system_resources")
    assert decide(RuleState(), machine, 1.0, enabled=True, guard=True) is Verdict.RUN
    assert decide(RuleState(), rule(), 1.0, enabled=True, guard=True) is Verdict.GUARD


def test_state_persists_in_epoch_seconds_and_comes_back_on_the_clock() -> None:
    """Clock 100 is epoch 1,000,000 in the first process, clock 5 in the next one."""
    state = RuleState(
        attempts=[90.0, 95.0],
        cooldown_until=160.0,
        incident_id="abc",
        incident_started=80.0,
        escalated=True,
        acted=True,
    )
    stored = persisted_state(state, lambda t: 1_000_000 + (t - 100))
    assert stored == PersistedState(
        attempts=(999_990.0, 999_995.0),
        cooldown_until=1_000_060.0,
        incident_id="abc",
        incident_started=999_980.0,
        escalated=True,
        acted=True,
    )
    back = restore_state(stored, lambda epoch: 5 + (epoch - 1_000_000))
    assert back == RuleState([-5.0, 0.0], 65.0, "abc", -15.0, True, True)
    none = persisted_state(RuleState(), lambda t: t + 1)
    assert none.cooldown_until is None and none.incident_started is None
    assert restore_state(none, lambda e: e).cooldown_until == -math.inf


def test_skip_summaries_say_why() -> None:
    """The audit's summary of each verdict that does not run."""
    r = rule(max_attempts=3, window_seconds=600.0)
    state = RuleState(cooldown_until=130.0)
    noon = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    statuses = {"postgresql": U, "ollama": C, "duckdb": H}

    def why(verdict: Verdict, *, enabled: bool = True) -> str:
        return skip_summary(
            verdict, r, state, 100.0, wall_now=noon, statuses=statuses, enabled=enabled
        )

    assert why(Verdict.COOLDOWN) == "cooling down until 2026-12-07 12:00:30 UTC"
    assert why(Verdict.ATTEMPT_LIMIT) == "3 attempt(s) in 600 s used"
    assert why(Verdict.GUARD) == "holding back: ollama, postgresql down at once (a shared cause?)"
    assert why(Verdict.DISABLED) == "rule disabled"
    assert why(Verdict.DISABLED, enabled=False) == "automated recovery disabled"
