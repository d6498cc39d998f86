"""What the status page shows: one plain, redacted document gathered from the process.

Sources: the monitor (components and their last hour, minute by minute),
the breakers, the alert service, the dead-letter queue, the recovery engine's
recent actions, the scheduler (each stage's next run), and the store (the
last run of each stage, memories over time). Store reads go through the API's
:class:`~biomem.metrics.BoundedReader`, one bounded read per section, so a
busy or closed store shows as an error in that section while every other
section still renders.

"Next run" is the scheduler's: the next fire time of the stage's job in the
daemon's APScheduler (:meth:`~biomem.orchestrator.Orchestrator.next_run_times`),
so a stage paused by recovery shows as paused and one recovery rescheduled
shows its new time; a stage with no job shows as not scheduled. Without a
scheduler in this process (``schedule`` None: a health server on its own) it
is estimated from the configured schedule — a cron schedule's next fire time,
or the last start plus the interval (the scheduler anchors intervals at its
start and adds jitter, so the estimate may be a few seconds off). A time
already past means the run is due (it waits for the job in flight).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, TypeVar

from biomem.app import App
from biomem.config import parse_schedule
from biomem.config.filecfg import cron_trigger
from biomem.health.model import HealthSnapshot
from biomem.health.monitor import HealthMonitor
from biomem.health.status_chart import chart_data, run_counts
from biomem.metrics import BoundedReader
from biomem.pipeline.runner import STAGES
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.resilience.redact import redact_text, redact_value

__all__ = [
    "AlertsProvider",
    "NextRun",
    "RecoveryProvider",
    "ScheduleProvider",
    "StatusSources",
    "gather_status",
    "next_run",
    "plain",
]

T = TypeVar("T")

AlertsProvider = Callable[[], Mapping[str, Any]]
# Recent recovery actions, newest first: at, rule, action, target, result, reason.
RecoveryProvider = Callable[[], Sequence[Mapping[str, Any]]]
# Each scheduled job's next fire time, None while paused (Orchestrator.next_run_times).
ScheduleProvider = Callable[[], Mapping[str, datetime | None]]

SHARE_WINDOW = timedelta(hours=24)  # the LLM share over recent runs
OLDEST_LETTERS = 5  # per open status
RECOVERY_ROWS = 20
ALERT_ROWS = 20
_RECOVERY_KEYS = ("at", "rule", "action", "target", "result", "reason")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSources:
    """Everything the status page reads; providers that are None show as "not running"."""

    monitor: HealthMonitor
    app: App
    reader: BoundedReader
    # Dead letters may be read from PostgreSQL: their own slots, so that a slow
    # PostgreSQL never blanks the store's sections (None: the store's reader).
    letters_reader: BoundedReader | None = None
    alerts: AlertsProvider | None = None
    recovery: RecoveryProvider | None = None
    schedule: ScheduleProvider | None = None
    wall_clock: Callable[[], datetime] = _utc_now


def plain(value: Any) -> Any:
    """JSON-ready data: containers to dicts/lists, times to ISO 8601, NaN/inf to None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def _describe(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")[:300]


def _guarded(read: Callable[[], T]) -> tuple[T | None, str | None]:
    """``read()`` or the reason it failed: one broken source must not blank the page."""
    try:
        return read(), None
    except Exception as exc:  # noqa: BLE001 - shown in its section: closed, busy, broken
        return None, _describe(exc)


def gather_status(sources: StatusSources) -> dict[str, Any]:
    """The whole page as plain data, redacted (what /status/data returns and /status renders)."""
    now = sources.wall_clock()
    snapshot = sources.monitor.fresh_snapshot()  # on demand, may run the checks first
    reader = sources.reader
    letters_reader = sources.letters_reader or reader
    letters, letters_error = _guarded(
        lambda: letters_reader.call(lambda: _dead_letters(sources.app))
    )
    jobs, jobs_error = _scheduled(sources.schedule)
    failed = jobs_error is not None
    stages, stages_error = _guarded(
        lambda: reader.call(lambda: _stages(sources.app, now, jobs, scheduler_failed=failed))
    )
    chart, chart_error = _guarded(lambda: reader.call(lambda: chart_data(sources.app.store, now)))
    body = {
        "generated_at": now,
        "status": snapshot.status.wire,
        "internal_status": snapshot.status.value,
        "interval_s": sources.monitor.interval_s,
        "components": _components(snapshot, sources.monitor, now),
        "breakers": _breakers(sources.app),
        "alerts": _alerts(sources.alerts),
        "dead_letters": {**(letters or {"counts": {}, "oldest": []}), "error": letters_error},
        "recovery": _recovery(sources.recovery),
        "stages": {"rows": stages or [], "error": stages_error or jobs_error},
        "chart": {**(chart or {"ingested": [], "consolidated": []}), "error": chart_error},
    }
    return dict(redact_value("status", plain(body)))


# --------------------------------------------------------------------------- in memory


def _components(
    snapshot: HealthSnapshot, monitor: HealthMonitor, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "name": comp.name,
            "type": comp.component_type,
            "required": comp.required,
            "status": comp.status.value,
            "wire": comp.status.wire,
            "output": comp.output,
            "checked_at": comp.checked_at,
            "measurements": [
                {"name": m.name, "value": m.value, "unit": m.unit, "status": m.status.value}
                for m in comp.measurements
            ],
            # The last hour, one slot a minute, oldest first (HealthMonitor.timeline).
            "timeline": [
                {
                    "start": slot.start,
                    "status": slot.status.value,
                    "checks": slot.checks,
                    "carried": slot.carried,
                    "gap": slot.gap,
                }
                for slot in monitor.timeline(comp.name, now)
            ],
        }
        for comp in snapshot.components.values()
    ]


def _breakers(app: App) -> list[dict[str, Any]]:
    out = []
    for breaker in app.guards.breakers.all():
        m = breaker.metrics()
        out.append(
            {
                "name": breaker.name,
                "state": m.state.value,
                "failure_rate": m.failure_rate,  # -1 below the minimum number of calls
                "slow_call_rate": m.slow_call_rate,
                "calls": m.calls,
                "not_permitted_calls": m.not_permitted_calls,
                "retry_after_s": breaker.retry_after(),
            }
        )
    return out


def _alert_rows(given: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    active = []
    for alert in list(given.get("active", []))[:ALERT_ROWS]:
        labels = dict(alert.get("labels", {}))
        annotations = dict(alert.get("annotations", {}))
        active.append(
            {
                "name": labels.get("alertname", ""),
                "component": labels.get("component", ""),
                "severity": labels.get("severity", ""),
                "state": alert.get("state", ""),
                "since": alert.get("startsAt", ""),
                "summary": annotations.get("summary") or annotations.get("description", ""),
            }
        )
    return active, int(given.get("undelivered", 0))


def _alerts(provider: AlertsProvider | None) -> dict[str, Any]:
    if provider is None:
        return {"running": False, "active": [], "undelivered": 0, "error": None}
    # Read and shaped under one guard: a malformed answer is an error shown, not a 503.
    rows, error = _guarded(lambda: _alert_rows(provider()))
    active, undelivered = rows if rows is not None else ([], 0)
    return {"running": True, "active": active, "undelivered": undelivered, "error": error}


def _recovery_rows(given: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # Only the documented keys: whatever else an action carries stays off the page.
    return [{key: row.get(key) for key in _RECOVERY_KEYS} for row in list(given)[:RECOVERY_ROWS]]


def _recovery(provider: RecoveryProvider | None) -> dict[str, Any]:
    if provider is None:
        return {"running": False, "actions": [], "skips": 0, "error": None}
    actions, error = _guarded(lambda: _recovery_rows(provider()))
    actions = actions or []
    skips = sum(1 for a in actions if "skip" in str(a.get("result") or "").lower())
    return {"running": True, "actions": actions, "skips": skips, "error": error}


def _scheduled(
    provider: ScheduleProvider | None,
) -> tuple[Mapping[str, datetime | None] | None, str | None]:
    """The scheduler's jobs; None without a scheduler, or when it could not be read (and why)."""
    if provider is None:
        return None, None
    jobs, error = _guarded(lambda: dict(provider()))
    return jobs, None if error is None else f"scheduler: {error}"


# --------------------------------------------------------------------------- store reads


def _dead_letters(app: App) -> dict[str, Any]:
    counts = {status.value: 0 for status in DeadLetterStatus}
    counts.update({status.value: n for status, n in app.dlq.counts().items()})
    oldest = []
    for status in (DeadLetterStatus.PENDING, DeadLetterStatus.REPLAYING, DeadLetterStatus.DEAD):
        for letter in app.dlq.list(status=status, limit=OLDEST_LETTERS):
            # The payload stays off the page: it may hold memory text or credentials.
            oldest.append(
                {
                    "id": letter.id,
                    "operation": letter.operation,
                    "component": letter.component,
                    "status": letter.status.value,
                    "attempts": letter.attempts,
                    "first_failed_at": letter.first_failed_at,
                    "next_attempt_at": letter.next_attempt_at,
                    "error": f"{letter.error_class}: {letter.message}"[:300],
                }
            )
    oldest.sort(key=lambda row: row["first_failed_at"])
    return {"counts": counts, "oldest": oldest}


_LAST_RUNS_SQL = """
SELECT stage, started_at, finished_at, status, counts, error FROM runs
WHERE id IN (SELECT max(id) FROM runs GROUP BY stage)
"""
_SHARES_SQL = """
SELECT stage,
       sum(coalesce(TRY_CAST(counts->>'$.llm' AS BIGINT), 0)),
       sum(coalesce(TRY_CAST(counts->>'$.fallback' AS BIGINT), 0))
FROM runs WHERE started_at >= ? GROUP BY stage
"""


def next_run(schedule: str, last_started: datetime | None, now: datetime) -> datetime | None:
    """When ``schedule`` next fires after ``now`` (None: an interval stage that never ran)."""
    kind, value = parse_schedule(schedule)
    if kind == "cron":
        fire: datetime | None = cron_trigger(str(value)).get_next_fire_time(None, now)
        return fire
    if last_started is None:
        return None
    return last_started + timedelta(seconds=float(value))


def _items(stage: str, counts: Mapping[str, Any]) -> int | None:
    keys = ("ingested", "updated", "unchanged", "stale", "quarantined")
    if stage == "ingest" and "items" not in counts:
        return sum(int(counts.get(k) or 0) for k in keys) if counts else None
    value = counts.get("items")
    return int(value) if isinstance(value, int | float) else None


class NextRun(StrEnum):
    """Where a stage's "next run" comes from."""

    SCHEDULED = "scheduled"  # the scheduler's next fire time
    PAUSED = "paused"  # the job is paused (recovery's pause_stages); no time
    NOT_SCHEDULED = "not_scheduled"  # the scheduler has no job for it (not started, stopping)
    ESTIMATED = "estimated"  # no scheduler in this process: from the configured schedule
    ON_DEMAND = "on_demand"  # ingest from files: `biomem ingest FILE`
    UNKNOWN = "unknown"  # the scheduler could not be read (the section says why)


def _next(
    stage: str,
    schedule: str | None,
    jobs: Mapping[str, datetime | None] | None,
    scheduler_failed: bool,
    started: datetime | None,
    now: datetime,
) -> tuple[NextRun, datetime | None]:
    if schedule is None:
        return NextRun.ON_DEMAND, None
    if scheduler_failed:
        return NextRun.UNKNOWN, None
    if jobs is None:
        return NextRun.ESTIMATED, next_run(schedule, started, now)
    if stage not in jobs:
        return NextRun.NOT_SCHEDULED, None
    fire = jobs[stage]
    return (NextRun.PAUSED, None) if fire is None else (NextRun.SCHEDULED, fire)


def _stages(
    app: App,
    now: datetime,
    jobs: Mapping[str, datetime | None] | None,
    *,
    scheduler_failed: bool = False,
) -> list[dict[str, Any]]:
    last = {str(row[0]): row for row in app.store.execute(_LAST_RUNS_SQL)}
    shares = {
        str(stage): (int(llm or 0), int(fallback or 0))
        for stage, llm, fallback in app.store.execute(_SHARES_SQL, [now - SHARE_WINDOW])
    }
    schedules = app.settings.schedules
    rows = []
    for stage in ["ingest", *STAGES]:
        row = last.get(stage)
        if stage == "ingest" and app.postgres is None:
            schedule = None  # files are ingested on demand: `biomem ingest FILE`
        else:
            schedule = str(getattr(schedules, stage))
        started = row[1] if row is not None else None
        finished = row[2] if row is not None else None
        counts = run_counts(row[4]) if row is not None else {}
        end = finished if finished is not None else now
        llm_24h, fallback_24h = shares.get(stage, (0, 0))
        upcoming, fire = _next(stage, schedule, jobs, scheduler_failed, started, now)
        rows.append(
            {
                "stage": stage,
                "schedule": schedule,
                "next_run": fire,
                "next_state": upcoming.value,
                "status": row[3] if row is not None else None,
                "started_at": started,
                "finished_at": finished,
                "duration_s": (end - started).total_seconds() if started is not None else None,
                "items": _items(stage, counts),
                "llm": counts.get("llm"),
                "fallback": counts.get("fallback"),
                "llm_24h": llm_24h,
                "fallback_24h": fallback_24h,
                "error": row[5] if row is not None else None,
            }
        )
    return rows
