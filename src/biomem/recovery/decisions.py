"""The engine's decisions, pure: every one takes ``now`` (clock seconds) and the rule's state.

* **Cooldown with jitter** — after an attempt the rule waits its cooldown
  plus a random share of it (``cooldown_jitter``), so rules that fired
  together do not act together again (systemd's ``RestartSec``, spread).
* **Attempts per rolling window** — at most ``max_attempts`` in the last
  ``window_seconds`` (systemd's ``StartLimitBurst`` in
  ``StartLimitIntervalSec``); attempts older than the window are forgotten.
* **Escalation once per incident** — an incident runs from the first time the
  trigger fires until its component is healthy again; when the attempts are
  used up the escalation actions run once in it, not at every evaluation
  (Kubernetes' CrashLoopBackOff reports once, then waits).
* **Global guard** — when more than ``max_unhealthy_share`` of the known
  components are unhealthy or critical at once (and at least two), the cause
  is probably shared (the network, the machine) and acting on each symptom
  would make it worse: remediation holds back (Cluster API's maxUnhealthy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from biomem.config.recovery import RecoveryRule
from biomem.health.model import Status
from biomem.recovery.audit import PersistedState

__all__ = [
    "GUARD_MIN_DOWN",
    "RuleState",
    "Verdict",
    "addresses_machine",
    "attempts_in_window",
    "close_incident",
    "cooldown_end",
    "decide",
    "guard_holds",
    "open_incident",
    "persisted_state",
    "record_attempt",
    "restore_state",
    "should_escalate",
    "skip_summary",
]

GUARD_MIN_DOWN = 2  # one failing component alone is never a "shared cause"
_DOWN = (Status.UNHEALTHY, Status.CRITICAL)


class Verdict(StrEnum):
    """What the engine does with a rule whose trigger fired."""

    RUN = "run"  # run the actions
    DISABLED = "disabled"  # the rule, or automated recovery, is switched off
    GUARD = "guard"  # most components are down at once: hold back
    COOLDOWN = "cooldown"  # the last attempt was too recent
    ATTEMPT_LIMIT = "attempt_limit"  # the attempts of the window are used up


@dataclass(slots=True)
class RuleState:
    """What the engine remembers of one rule, in clock seconds; persisted across restarts."""

    attempts: list[float] = field(default_factory=list)  # times of attempts in the window
    cooldown_until: float = -math.inf
    incident_id: str | None = None  # set while an incident is open
    incident_started: float | None = None
    escalated: bool = False  # the escalation ran in this incident
    acted: bool = False  # an attempt ran in this incident (resolve actions then run)

    def copy(self) -> RuleState:
        return RuleState(
            list(self.attempts),
            self.cooldown_until,
            self.incident_id,
            self.incident_started,
            self.escalated,
            self.acted,
        )


def restore_state(saved: PersistedState, to_clock: Callable[[float], float]) -> RuleState:
    """A persisted state (epoch seconds) back on the clock, with ``to_clock(epoch)``."""
    return RuleState(
        attempts=[to_clock(t) for t in saved.attempts],
        cooldown_until=-math.inf
        if saved.cooldown_until is None
        else to_clock(saved.cooldown_until),
        incident_id=saved.incident_id,
        incident_started=None
        if saved.incident_started is None
        else to_clock(saved.incident_started),
        escalated=saved.escalated,
        acted=saved.acted,
    )


def persisted_state(state: RuleState, to_epoch: Callable[[float], float]) -> PersistedState:
    """A state as persisted (epoch seconds), with ``to_epoch(clock_seconds)``."""
    return PersistedState(
        attempts=tuple(to_epoch(t) for t in state.attempts),
        cooldown_until=None if math.isinf(state.cooldown_until) else to_epoch(state.cooldown_until),
        incident_id=state.incident_id,
        incident_started=None
        if state.incident_started is None
        else to_epoch(state.incident_started),
        escalated=state.escalated,
        acted=state.acted,
    )


def attempts_in_window(attempts: Iterable[float], now: float, window_s: float) -> list[float]:
    """The attempts made within the rolling window ending at ``now``."""
    return [t for t in attempts if now - t < window_s]


def cooldown_end(now: float, cooldown_s: float, jitter: float, draw: float) -> float:
    """When the cooldown that starts at ``now`` ends.

    Args:
        draw: a random number in [0, 1); the jitter adds ``jitter × draw`` of the
            cooldown, so the wait is never shorter than the cooldown itself.
    """
    if not 0.0 <= draw < 1.0:
        raise ValueError("draw must be in [0, 1)")
    return now + cooldown_s * (1.0 + jitter * draw)


def addresses_machine(rule: RecoveryRule) -> bool:
    """True for the rules about the machine itself (system_resources): the guard spares them.

    The guard holds back because a shared cause makes remediation of each
    component pointless or harmful. When the machine's own disk, memory or CPU is
    that cause (a full disk fails the store and the pipeline together), the rules
    on system_resources act on the cause itself — removing biomem's temporary
    files, rotating its logs, collecting garbage, pausing heavy stages — and
    holding them back would keep every other component down.
    """
    return rule.component == "system_resources"


def guard_holds(statuses: Iterable[Status], max_share: float) -> bool:
    """True when remediation must hold back: most known components are down at once."""
    known = [s for s in statuses if s is not Status.UNKNOWN]
    down = sum(1 for s in known if s in _DOWN)
    return bool(known) and down >= GUARD_MIN_DOWN and down / len(known) > max_share


def decide(
    state: RuleState,
    rule: RecoveryRule,
    now: float,
    *,
    enabled: bool,
    guard: bool,
) -> Verdict:
    """What to do about a rule whose trigger fired at ``now``; ``guard``: :func:`guard_holds`
    (it holds back every rule but those that :func:`addresses_machine`)."""
    if not (enabled and rule.enabled):
        return Verdict.DISABLED
    if guard and not addresses_machine(rule):
        return Verdict.GUARD
    if now < state.cooldown_until:
        return Verdict.COOLDOWN
    if len(attempts_in_window(state.attempts, now, rule.window_seconds)) >= rule.max_attempts:
        return Verdict.ATTEMPT_LIMIT
    return Verdict.RUN


def should_escalate(state: RuleState, verdict: Verdict) -> bool:
    """True once per incident: the attempts are used up and no escalation ran yet."""
    return (
        verdict is Verdict.ATTEMPT_LIMIT and state.incident_id is not None and not state.escalated
    )


def open_incident(state: RuleState, now: float, incident_id: str) -> bool:
    """Open an incident unless one is open; True when this call opened it."""
    if state.incident_id is not None:
        return False
    state.incident_id = incident_id
    state.incident_started = now
    state.escalated = False
    state.acted = False
    return True


def close_incident(state: RuleState) -> bool:
    """Close the open incident (the component is healthy again); True when one was open.

    Attempts stay counted in their window and the cooldown stays: a component
    that flaps does not earn a fresh set of attempts each time it recovers.
    """
    if state.incident_id is None:
        return False
    state.incident_id = None
    state.incident_started = None
    state.escalated = False
    state.acted = False
    return True


def record_attempt(state: RuleState, rule: RecoveryRule, now: float, draw: float) -> None:
    """Count an attempt at ``now`` and start the cooldown (``draw`` in [0, 1) for the jitter)."""
    state.attempts = [*attempts_in_window(state.attempts, now, rule.window_seconds), now]
    state.cooldown_until = cooldown_end(now, rule.cooldown_seconds, rule.cooldown_jitter, draw)
    state.acted = True


def skip_summary(
    verdict: Verdict,
    rule: RecoveryRule,
    state: RuleState,
    now: float,
    *,
    wall_now: datetime,
    statuses: Mapping[str, Status],
    enabled: bool,
) -> str:
    """Why a fired rule did not act, for the audit and the operator."""
    if verdict is Verdict.COOLDOWN:
        until = wall_now + timedelta(seconds=state.cooldown_until - now)
        return f"cooling down until {until:%Y-%m-%d %H:%M:%S} UTC"
    if verdict is Verdict.ATTEMPT_LIMIT:
        return f"{rule.max_attempts} attempt(s) in {rule.window_seconds:g} s used"
    if verdict is Verdict.GUARD:
        down = sorted(n for n, s in statuses.items() if s in _DOWN)
        return f"holding back: {', '.join(down)} down at once (a shared cause?)"
    return "automated recovery disabled" if not enabled else "rule disabled"
