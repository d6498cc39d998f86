"""The recovery engine: observe, decide, act, audit — on its own thread, never dying.

Each evaluation (every ``[recovery] interval_seconds``, with jitter) takes one
:class:`~biomem.recovery.rules.Observation` and, for every rule in order:

1. evaluates the trigger: CLEAR ends an open incident (and runs the rule's
   resolve actions when it acted in it), PENDING waits, FIRED goes on;
2. opens an incident if none is open;
3. decides (:mod:`biomem.recovery.decisions`): disabled, guard, cooldown,
   attempt limit, or run;
4. runs the actions in order — each planned, then done (or only rendered in
   a dry run, or skipped as unavailable) — and starts the cooldown; or, when
   the attempts are used up, runs the escalation actions once per incident;
5. audits every decision, counts it for the metrics, and persists the rule's
   state (attempts, cooldown, incident) so a restart does not reset them.

After the rules, the ends of commands that actions started (the Ollama
restart) and that have ended since are audited: no action waits for a
command, so the engine never holds its lock while one runs.

In a dry run (RECOVERY_DRY_RUN) the engine decides exactly as a real run
would: it starts from the saved state (attempts, cooldowns, incidents — read,
never written), so after a restart it skips what a real run would skip,
keeps what it decides in memory only, and records each action's plan with
reason ``dry_run``: nothing is done and nothing of the real state changes.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from biomem.config.recovery import RecoveryRule
from biomem.logfile import LogFile
from biomem.logging import get_logger
from biomem.recovery.actions import (
    Action,
    Escalator,
    build_actions,
)
from biomem.recovery.audit import AuditRecord, PersistedState, RecoveryAudit
from biomem.recovery.decisions import (
    RuleState,
    Verdict,
    close_incident,
    decide,
    guard_holds,
    open_incident,
    persisted_state,
    record_attempt,
    restore_state,
    should_escalate,
    skip_summary,
)
from biomem.recovery.processes import ProcessRegistry
from biomem.recovery.rules import Fired, Observation, TriggerResult, evaluate
from biomem.recovery.runner import ActionRunner
from biomem.recovery.signals import SignalSource
from biomem.resilience.clock import Clock
from biomem.resilience.errors import BiomemError, InputError

if TYPE_CHECKING:
    from biomem.app import App
    from biomem.config.tree import RecoverySettings
    from biomem.orchestrator import Orchestrator

__all__ = ["RecoveryBusyError", "RecoveryEngine", "UnknownRuleError"]

log = get_logger(__name__)


class UnknownRuleError(InputError):
    """``biomem recovery run`` was given a rule name that does not exist."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"no recovery rule {name!r}; known: {', '.join(known)}")


class RecoveryBusyError(BiomemError):
    """A manual run waited ``wait_s`` for the evaluation in progress, in vain."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"recovery is busy with an evaluation (waited {wait_s:g} s); try again")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RecoveryEngine:
    """Rules acting on what the process observes.

    Args:
        app: the resources the actions work on (store, PostgreSQL, caches, DLQ).
        signals: where observations come from.
        audit: the audit table and persisted rule states.
        processes: the commands and workers biomem starts.
        escalator: receives escalations (the alert service, or a log).
        orchestrator: stage runs and schedules; None without the daemon's.
        rules: the rules (default: the settings' defaults with overrides).
        clock: monotonic time for every decision (a FakeClock in tests).
        wall_clock: times people read, and for persisting state.
        rng: draws the cooldown jitter.
        dry_run / enabled: the switches (default: RECOVERY_DRY_RUN and
            AUTOMATED_RECOVERY_ENABLED).
        wait_for_commands: a one-off process (``biomem recovery run`` without a
            daemon): wait for the commands a manual run starts, ending those
            past their deadline, since nobody would collect them after it exits.
    """

    def __init__(
        self,
        *,
        app: App,
        signals: SignalSource,
        audit: RecoveryAudit,
        processes: ProcessRegistry,
        escalator: Escalator,
        orchestrator: Orchestrator | None = None,
        rules: Sequence[RecoveryRule] | None = None,
        actions: Mapping[str, Action] | None = None,
        clock: Clock | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
        log_file: LogFile | None = None,
        dry_run: bool | None = None,
        enabled: bool | None = None,
        wait_for_commands: bool = False,
    ) -> None:
        self._app = app
        self.settings: RecoverySettings = app.settings.recovery
        self._signals = signals
        self._audit = audit
        self.rules = list(rules) if rules is not None else self.settings.active_rules()
        self._clock = clock if clock is not None else app.guards.clock
        self._wall = wall_clock
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter
        self.dry_run = self.settings.dry_run if dry_run is None else dry_run
        self.enabled = self.settings.enabled if enabled is None else enabled
        self._wait_for_commands = wait_for_commands
        self._lock = threading.RLock()
        self._runner = ActionRunner(
            app=app,
            settings=self.settings,
            audit=audit,
            processes=processes,
            escalator=escalator,
            actions=actions if actions is not None else build_actions(),
            clock=self._clock,
            wall_clock=wall_clock,
            orchestrator=orchestrator,
            log_file=log_file,
            dry_run=self.dry_run,
        )
        self._states: dict[str, RuleState] = {}
        self._dirty: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_states()

    # ----------------------------------------------------------------- state

    def _load_states(self) -> None:
        # A dry run reads the saved state too (it would otherwise render actions a
        # real run skips for cooldown or attempts); it never writes it (_finish).
        try:
            stored = self._audit.load_states()
        except Exception as exc:  # noqa: BLE001 - the store may be failing: start afresh
            log.warning("recovery_state_unreadable", error=str(exc))
            return
        now, wall = self._clock.monotonic(), self._wall().timestamp()
        for name, persisted in stored.items():
            self._states[name] = restore_state(persisted, lambda epoch: now + (epoch - wall))

    def state(self, rule: str) -> RuleState:
        """A copy of a rule's state (clock seconds)."""
        with self._lock:
            return self._states.get(rule, RuleState()).copy()

    def _state(self, rule: str) -> RuleState:
        return self._states.setdefault(rule, RuleState())

    def _as_saved(self, names: Sequence[str]) -> dict[str, PersistedState]:
        # Both clocks read together: actions may have taken a while since the tick began.
        now, wall = self._clock.monotonic(), self._wall().timestamp()
        return {
            name: persisted_state(self._states[name], lambda t: wall + (t - now)) for name in names
        }

    def saved_states(self, *, wait_s: float | None = None) -> dict[str, PersistedState]:
        """Every rule's state as it is persisted (wall-clock epoch seconds).

        Raises:
            RecoveryBusyError: an evaluation in progress outlasted ``wait_s``.
        """
        if not self._lock.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
            raise RecoveryBusyError(wait_s or 0.0)
        try:
            return self._as_saved(sorted(self._states))
        finally:
            self._lock.release()

    def _persist(self) -> None:
        for name, saved in self._as_saved(sorted(self._dirty)).items():
            self._audit.save_state(name, saved)
        self._dirty.clear()

    # ----------------------------------------------------------------- evaluation

    def tick(self) -> list[AuditRecord]:
        """One evaluation of every rule; returns the decisions. Never raises."""
        with self._lock:
            records: list[AuditRecord] = []
            now = self._clock.monotonic()
            try:
                observation = self._signals.observe(now)
                guard = guard_holds(
                    observation.statuses.values(), self.settings.max_unhealthy_share
                )
                for rule in self.rules:
                    try:
                        records += self._evaluate(rule, observation, guard, now)
                    except Exception:  # one rule's bug must not silence the others
                        log.exception("recovery_rule_crashed", rule=rule.name)
            except Exception:  # the loop never dies: log whole and go on
                log.exception("recovery_tick_crashed")
            records += self._commands_ended()
            self._finish()
            return records

    def _commands_ended(self) -> list[AuditRecord]:
        try:
            return self._runner.collect()
        except Exception:  # the audit of a command's end must not stop the loop
            log.exception("recovery_commands_uncollected")
            return []

    def _finish(self) -> None:
        try:
            if self.dry_run:
                self._dirty.clear()  # a dry run's state lives in memory only
            else:
                self._persist()
            self._audit.flush()
        except Exception:  # the store's trouble is the DuckDB rule's to fix
            log.exception("recovery_flush_crashed")

    def _evaluate(
        self, rule: RecoveryRule, obs: Observation, guard: bool, now: float
    ) -> list[AuditRecord]:
        result = evaluate(rule, obs)
        state = self._state(rule.name)
        if result.state is Fired.CLEAR:
            if state.incident_id is None:
                return []
            incident, acted = state.incident_id, state.acted
            close_incident(state)
            self._dirty.add(rule.name)
            log.info("recovery_incident_resolved", rule=rule.name, incident=incident)
            if acted and rule.resolve_actions:
                return self._runner.run(
                    rule, rule.resolve_actions, "resolve", obs, result, incident
                )
            return []
        if result.state is Fired.PENDING:
            return []
        if open_incident(state, now, uuid.uuid4().hex[:12]):
            self._dirty.add(rule.name)
            log.warning(
                "recovery_incident_opened",
                rule=rule.name,
                incident=state.incident_id,
                trigger=result.detail,
            )
        verdict = decide(state, rule, now, enabled=self.enabled, guard=guard)
        current = state.incident_id
        if verdict is Verdict.RUN:
            record_attempt(state, rule, now, self._rng.random())
            self._dirty.add(rule.name)
            return self._runner.run(rule, rule.actions, "act", obs, result, current)
        records: list[AuditRecord] = []
        if should_escalate(state, verdict):
            state.escalated = True
            self._dirty.add(rule.name)
            records += self._runner.run(
                rule, rule.escalation_actions, "escalate", obs, result, current
            )
        records.append(self._skip(rule, verdict, obs, result, state, now))
        return records

    def _skip(
        self,
        rule: RecoveryRule,
        verdict: Verdict,
        obs: Observation,
        result: TriggerResult,
        state: RuleState,
        now: float,
    ) -> AuditRecord:
        why = skip_summary(
            verdict,
            rule,
            state,
            now,
            wall_now=self._wall(),
            statuses=obs.statuses,
            enabled=self.enabled,
        )
        return self._runner.record(
            rule,
            "+".join(rule.actions),
            "skipped",
            "act",
            result,
            state.incident_id,
            reason=verdict.value,
            summary=why,
        )

    # ----------------------------------------------------------------- manual runs

    def run_rule(
        self, name: str, *, dry_run: bool | None = None, wait_s: float | None = None
    ) -> list[AuditRecord]:
        """Run a rule's actions now, whatever its trigger, cooldown and attempts say.

        An operator's run: audited (phase ``manual``), not counted as an attempt.
        A disabled rule is skipped. A command an action starts is not waited
        for (its end is audited when seen) unless ``wait_for_commands``.

        Args:
            wait_s: how long to wait for an evaluation in progress (None: as long
                as it takes).

        Raises:
            UnknownRuleError: no rule has this name.
            RecoveryBusyError: the evaluation in progress outlasted ``wait_s``.
        """
        rule = next((r for r in self.rules if r.name == name), None)
        if rule is None:
            raise UnknownRuleError(name, [r.name for r in self.rules])
        if not self._lock.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
            raise RecoveryBusyError(wait_s or 0.0)
        try:
            now = self._clock.monotonic()
            obs = self._signals.observe(now)
            found = evaluate(rule, obs)
            why = f"manual run ({found.detail})" if found.state is Fired.FIRED else "manual run"
            result = TriggerResult(Fired.FIRED, why, found.target, found.pass_id)
            if not rule.enabled:
                records = [
                    self._runner.record(
                        rule,
                        "+".join(rule.actions),
                        "skipped",
                        "manual",
                        result,
                        None,
                        reason="disabled",
                        summary="rule disabled",
                    )
                ]
            else:
                records = self._runner.run(
                    rule, rule.actions, "manual", obs, result, None, dry_run=dry_run
                )
            if self._wait_for_commands:
                records += self._runner.finish()
            else:
                records += self._commands_ended()
            self._audit.flush()
            return records
        finally:
            self._lock.release()

    def collect_commands(self) -> list[AuditRecord]:
        """Audit the ends of the commands that actions started and that have ended since."""
        with self._lock:
            records = self._commands_ended()
            self._finish()
            return records

    # ----------------------------------------------------------------- surfaces

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Decisions by (rule, action, result) since start: the metrics' counter."""
        return self._runner.counts()

    def snapshot(self) -> dict[str, Any]:
        """What /health/detailed shows under ``recovery``."""
        return {
            "enabled": self.enabled,
            "dry_run": self.dry_run,
            "rules": len(self.rules),
            "recent": self._audit.recent(20),
        }

    def start(self) -> None:
        """Evaluate every ``interval_seconds`` (with jitter) on a thread of its own."""
        if self._thread is not None:
            return
        try:
            keep = timedelta(days=self.settings.audit_keep_days)
            pruned = self._audit.prune(self._wall() - keep)
            if pruned:
                log.info("recovery_audit_pruned", rows=pruned)
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping
            log.warning("recovery_audit_prune_failed", error=str(exc))
        interval = self.settings.interval_seconds
        jitter = random.Random()  # noqa: S311 - jitter, not cryptography

        def loop() -> None:
            while not self._stop.wait(interval * jitter.uniform(0.9, 1.1)):
                self.tick()

        self._thread = threading.Thread(target=loop, name="recovery", daemon=True)
        self._thread.start()
        log.info(
            "recovery_started", rules=len(self.rules), dry_run=self.dry_run, enabled=self.enabled
        )

    def request_stop(self) -> None:
        """Evaluate no more; an evaluation in progress finishes."""
        self._stop.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop and wait for an evaluation in progress (at most ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
