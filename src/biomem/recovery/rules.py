"""Rules meet observations: what the engine sees at one moment, and whether a trigger fired.

The rules themselves are configuration (:mod:`biomem.config.recovery`: the
defaults and the ``[[recovery.rules]]`` laid over them); this module reads
them against an :class:`Observation` — one consistent picture gathered by
:mod:`biomem.recovery.signals` — and answers, purely, FIRED / PENDING /
CLEAR for each:

============  ==============================================  =====================
trigger       fires when                                      clear (incident over)
============  ==============================================  =====================
status        the component's last N checks were all in       the last check was
              ``when_status``                                 healthy, or the last N
                                                              all outside when_status
breaker_open  the component's breaker has not closed for      the breaker is closed
              ``open_seconds``
dead_letters  more than ``dead_letters_above`` pending        at or below it
resource      the resource's last N readings were all in      likewise, its readings
              ``when_status`` (memory, disk, cpu, fds)
stage_stuck   a stage run (of ``stages``, or any) has run     no run is that long
              ``stuck_seconds``
worker_stuck  a process biomem started runs past its          none is
              deadline
============  ==============================================  =====================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from biomem.config.recovery import RecoveryRule
from biomem.health.model import Status

__all__ = [
    "Fired",
    "Observation",
    "StageRun",
    "TriggerResult",
    "Worker",
    "describe_trigger",
    "evaluate",
]


@dataclass(frozen=True, slots=True)
class StageRun:
    """A stage run in progress."""

    pass_id: int
    job: str
    stage: str
    running_s: float
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Worker:
    """A process biomem started that runs past its deadline."""

    pid: int
    purpose: str
    overdue_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """Everything the triggers read, at one moment (``at``, clock seconds).

    ``history`` and ``resources`` are the recent statuses, oldest first: of
    each component (the monitor's history) and of each resource reading.
    """

    at: float
    statuses: Mapping[str, Status] = field(default_factory=dict)
    history: Mapping[str, tuple[Status, ...]] = field(default_factory=dict)
    resources: Mapping[str, tuple[Status, ...]] = field(default_factory=dict)
    breakers_open_s: Mapping[str, float] = field(default_factory=dict)  # not closed since
    dead_letters: int | None = None  # pending; None when the store could not tell
    stage_runs: tuple[StageRun, ...] = ()
    stuck_workers: tuple[Worker, ...] = ()


class Fired(StrEnum):
    FIRED = "fired"  # act (subject to guard, cooldown, attempts)
    PENDING = "pending"  # not fine, not (yet) enough to act: an open incident stays open
    CLEAR = "clear"  # fine again: an open incident ends


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """A trigger's answer, with the reason in words and what it points at."""

    state: Fired
    detail: str = ""
    target: str | None = None  # e.g. the stuck stage
    pass_id: int | None = None  # the stuck run


def _streak(recent: tuple[Status, ...], rule: RecoveryRule, what: str) -> TriggerResult:
    wanted = {Status(s) for s in rule.when_status}
    n = rule.consecutive_checks
    last = recent[-n:]
    if len(last) == n and all(s in wanted for s in last):
        return TriggerResult(Fired.FIRED, f"{what} {last[-1].value} for {n} check(s) in a row")
    if recent and recent[-1] is Status.HEALTHY:
        return TriggerResult(Fired.CLEAR, f"{what} healthy")
    if len(last) == n and not any(s in wanted for s in last):
        # Settled below the trigger (e.g. degraded after critical): the incident is over,
        # or a machine that stays degraded would keep its heavy stages paused for good.
        return TriggerResult(Fired.CLEAR, f"{what} {last[-1].value}, below the trigger")
    now = recent[-1].value if recent else "not checked yet"
    return TriggerResult(Fired.PENDING, f"{what} {now}")


def evaluate(rule: RecoveryRule, obs: Observation) -> TriggerResult:
    """Whether ``rule``'s trigger fires in ``obs``."""
    kind = rule.trigger
    if kind == "status":
        return _streak(obs.history.get(rule.component, ()), rule, rule.component)
    if kind == "resource":
        resource = rule.resource or ""
        return _streak(obs.resources.get(resource, ()), rule, resource)
    if kind == "breaker_open":
        open_s = obs.breakers_open_s.get(rule.component)
        if open_s is None:
            return TriggerResult(Fired.CLEAR, f"{rule.component} breaker closed")
        text = f"{rule.component} breaker not closed for {open_s:.0f} s"
        return TriggerResult(Fired.FIRED if open_s >= rule.open_seconds else Fired.PENDING, text)
    if kind == "dead_letters":
        if obs.dead_letters is None:
            return TriggerResult(Fired.PENDING, "dead letters unreadable")
        text = f"{obs.dead_letters} pending dead letter(s)"
        above = obs.dead_letters > rule.dead_letters_above
        return TriggerResult(Fired.FIRED if above else Fired.CLEAR, text)
    if kind == "stage_stuck":
        watched = [r for r in obs.stage_runs if not rule.stages or r.stage in rule.stages]
        stuck = [r for r in watched if r.running_s >= rule.stuck_seconds]
        if not stuck:
            return TriggerResult(Fired.CLEAR, "no stage run is stuck")
        worst = max(stuck, key=lambda r: r.running_s)
        return TriggerResult(
            Fired.FIRED,
            f"stage {worst.stage} running for {worst.running_s:.0f} s",
            target=worst.stage,
            pass_id=worst.pass_id,
        )
    if kind == "worker_stuck":
        if not obs.stuck_workers:
            return TriggerResult(Fired.CLEAR, "no worker is stuck")
        pids = ", ".join(str(w.pid) for w in obs.stuck_workers)
        return TriggerResult(Fired.FIRED, f"worker(s) {pids} past their deadline")
    raise ValueError(f"unknown trigger {kind!r}")  # pragma: no cover - validated by config


def describe_trigger(rule: RecoveryRule) -> str:
    """The trigger in words, for ``biomem recovery rules``."""
    kind = rule.trigger
    statuses = "/".join(rule.when_status)
    if kind == "status":
        return f"{rule.component} {statuses} × {rule.consecutive_checks}"
    if kind == "resource":
        return f"{rule.resource} {statuses} × {rule.consecutive_checks}"
    if kind == "breaker_open":
        return f"{rule.component} breaker open ≥ {rule.open_seconds:g} s"
    if kind == "dead_letters":
        return f"pending dead letters > {rule.dead_letters_above}"
    if kind == "stage_stuck":
        stages = ", ".join(rule.stages) or "any stage"
        return f"{stages} running ≥ {rule.stuck_seconds:g} s"
    return "a worker past its deadline"
