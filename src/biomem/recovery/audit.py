"""The audit of recovery decisions and the rules' persisted state, in the store.

Every decision becomes an :class:`AuditRecord` — redacted when it is made —
kept in memory (the recent ones, for /health/detailed) and written to
``recovery_audit``. A skip that repeats the rule's previous row (the same
action, outcome, reason, phase and incident: a cooldown seen at every
evaluation) updates that row's ``occurrences`` and ``last_at`` instead of
adding one per evaluation.

Writes go through a buffer: when the store fails — which is when the DuckDB
rule acts — the rows and states wait in memory (bounded) and are written at
the next :meth:`RecoveryAudit.flush` that succeeds. Nothing here raises to
the engine for a store failure.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from biomem.logging import get_logger
from biomem.resilience.errors import BiomemError
from biomem.resilience.redact import redact_text, redact_value
from biomem.store.connection import DuckDBStore

__all__ = ["AuditRecord", "PersistedState", "RecoveryAudit"]

log = get_logger(__name__)

_STORE_WAIT_S = 2.0
_INSERT = (
    "INSERT INTO recovery_audit (decided_at, last_at, occurrences, rule, component, action,"
    " target, arguments, outcome, reason, summary, detail, why, phase, incident_id, duration_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, ?, ?, ?, ?::JSON, ?, ?, ?, ?) RETURNING id"
)
_COLUMNS = (
    "id, decided_at, last_at, occurrences, rule, component, action, target, arguments, outcome,"
    " reason, summary, detail, why, phase, incident_id, duration_ms"
)
# The columns under the names AuditRecord.as_dict uses.
_KEYS = tuple(
    {"decided_at": "at", "why": "trigger"}.get(c.strip(), c.strip()) for c in _COLUMNS.split(",")
)


@dataclass(slots=True, kw_only=True, eq=False)  # identity: the buffer tracks these objects
class AuditRecord:
    """One decision: done, failed, or skipped with a reason."""

    at: datetime
    rule: str
    component: str
    action: str
    outcome: str  # done, failed, skipped; started: a command left running (its end follows)
    phase: str  # act, escalate, resolve, manual
    reason: str | None = None  # for skipped: cooldown, attempt_limit, guard, dry_run, ...
    target: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    trigger: str = ""
    incident_id: str | None = None
    duration_ms: float | None = None
    occurrences: int = 1
    last_at: datetime | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        # Redacted once, here: memory, the table, the API and the CLI all see this.
        self.arguments = redact_value("arguments", dict(self.arguments))
        self.detail = redact_value("detail", dict(self.detail))
        self.summary = redact_text(self.summary)
        self.trigger = redact_text(self.trigger)
        if self.last_at is None:
            self.last_at = self.at

    def repeats(self, other: AuditRecord) -> bool:
        """True when ``other`` is this skip again (same rule, action, reason, phase, incident)."""
        return (
            self.outcome == "skipped"
            and other.outcome == "skipped"
            and (self.rule, self.action, self.reason, self.phase, self.incident_id)
            == (other.rule, other.action, other.reason, other.phase, other.incident_id)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "last_at": self.last_at.isoformat() if self.last_at else None,
            "occurrences": self.occurrences,
            "rule": self.rule,
            "component": self.component,
            "action": self.action,
            "target": self.target,
            "arguments": dict(self.arguments),
            "outcome": self.outcome,
            "reason": self.reason,
            "summary": self.summary,
            "detail": dict(self.detail),
            "trigger": self.trigger,
            "phase": self.phase,
            "incident_id": self.incident_id,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class PersistedState:
    """A rule's state in wall-clock epoch seconds, as stored."""

    attempts: tuple[float, ...] = ()
    cooldown_until: float | None = None
    incident_id: str | None = None
    incident_started: float | None = None
    escalated: bool = False
    acted: bool = False


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class RecoveryAudit:
    """The audit table and the rule states of one store, written through a bounded buffer.

    Args:
        store: the DuckDB store (migrated: ``recovery_audit``, ``recovery_rule_state``).
        recent: decisions kept in memory for /health/detailed.
        max_pending: rows waiting for the store at most; the oldest go first (logged).
    """

    def __init__(self, store: DuckDBStore, *, recent: int = 50, max_pending: int = 1000) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._recent: deque[AuditRecord] = deque(maxlen=recent)
        self._pending: deque[AuditRecord] = deque()
        self._max_pending = max_pending
        self._last: dict[str, AuditRecord] = {}
        self._states: dict[str, PersistedState] = {}

    def record(self, record: AuditRecord) -> AuditRecord:
        """Add a decision (or count a repeat of the rule's last skip); return the row kept."""
        with self._lock:
            last = self._last.get(record.rule)
            if last is not None and last.repeats(record):
                last.occurrences += 1
                last.last_at = record.at
                if last not in self._pending:
                    self._pending.append(last)
                return last
            self._last[record.rule] = record
            self._recent.append(record)
            self._pending.append(record)
            while len(self._pending) > self._max_pending:
                dropped = self._pending.popleft()
                log.error("recovery_audit_row_dropped", rule=dropped.rule, action=dropped.action)
            return record

    def save_state(self, rule: str, state: PersistedState) -> None:
        """Queue a rule's state for the next flush."""
        with self._lock:
            self._states[rule] = state

    def flush(self) -> bool:
        """Write what waits; False (and everything kept) when the store failed."""
        with self._lock:
            rows = list(self._pending)
            written = {id(row): row.occurrences for row in rows}
            states = dict(self._states)
        if not rows and not states:
            return True
        now = datetime.now(UTC)
        inserted: list[AuditRecord] = []
        try:
            # Bounded: a long stage transaction must not hold up recovery's next step.
            with self._store.transaction(wait_s=_STORE_WAIT_S) as con:
                for row in rows:
                    if row.id is None:
                        found = con.execute(
                            _INSERT,
                            [
                                row.at,
                                row.last_at,
                                row.occurrences,
                                row.rule,
                                row.component,
                                row.action,
                                row.target,
                                json.dumps(row.arguments, default=str),
                                row.outcome,
                                row.reason,
                                row.summary,
                                json.dumps(row.detail, default=str),
                                row.trigger,
                                row.phase,
                                row.incident_id,
                                row.duration_ms,
                            ],
                        ).fetchone()
                        row.id = int(found[0]) if found else None
                        inserted.append(row)
                    else:
                        con.execute(
                            "UPDATE recovery_audit SET occurrences = ?, last_at = ? WHERE id = ?",
                            [row.occurrences, row.last_at, row.id],
                        )
                for rule, state in states.items():
                    con.execute(
                        "INSERT INTO recovery_rule_state VALUES (?, ?::JSON, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (rule) DO UPDATE SET attempts = excluded.attempts,"
                        " cooldown_until = excluded.cooldown_until,"
                        " incident_id = excluded.incident_id,"
                        " incident_started_at = excluded.incident_started_at,"
                        " escalated = excluded.escalated, acted = excluded.acted,"
                        " updated_at = excluded.updated_at",
                        [
                            rule,
                            json.dumps(list(state.attempts)),
                            state.cooldown_until,
                            state.incident_id,
                            state.incident_started,
                            state.escalated,
                            state.acted,
                            now,
                        ],
                    )
        except BiomemError as exc:
            for row in inserted:
                row.id = None  # the insert rolled back with the transaction
            log.warning("recovery_audit_deferred", rows=len(rows), error=str(exc))
            return False
        with self._lock:
            for row in rows:
                # A repeat counted while we wrote stays queued: its update is still due.
                if row.occurrences == written[id(row)] and row in self._pending:
                    self._pending.remove(row)
            for rule, state in states.items():
                if self._states.get(rule) is state:
                    del self._states[rule]
        return True

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest decisions of this process, newest first (from memory)."""
        with self._lock:
            rows = list(self._recent)[-limit:]
        return [row.as_dict() for row in reversed(rows)]

    def history(self, *, limit: int = 50, rule: str | None = None) -> list[dict[str, Any]]:
        """Decisions from the table, newest first (after writing what waits)."""
        self.flush()
        where, params = ("WHERE rule = ?", [rule]) if rule else ("", [])
        rows = self._store.execute(
            f"SELECT {_COLUMNS} FROM recovery_audit {where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        out = []
        for row in rows:
            item = dict(zip(_KEYS, row, strict=True))
            for key in ("at", "last_at"):
                item[key] = item[key].isoformat() if item[key] is not None else None
            item["arguments"] = _loads(item["arguments"]) or {}
            item["detail"] = _loads(item["detail"]) or {}
            out.append(item)
        return out

    def load_states(self) -> dict[str, PersistedState]:
        """Every rule's stored state."""
        rows = self._store.execute(
            "SELECT rule, attempts, cooldown_until, incident_id, incident_started_at, escalated,"
            " acted FROM recovery_rule_state"
        )
        return {
            str(rule): PersistedState(
                tuple(float(t) for t in (_loads(attempts) or [])),
                None if cooldown is None else float(cooldown),
                incident,
                None if started is None else float(started),
                bool(escalated),
                bool(acted),
            )
            for rule, attempts, cooldown, incident, started, escalated, acted in rows
        }

    def prune(self, older_than: datetime) -> int:
        """Delete audit rows whose last occurrence is older than ``older_than``."""
        rows = self._store.execute(
            "DELETE FROM recovery_audit WHERE last_at < ? RETURNING id", [older_than]
        )
        return len(rows)
