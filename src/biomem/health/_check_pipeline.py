"""The pipeline check (optional): stages on schedule, dead letters, open breakers.

A late stage or a letter that gave up degrades the whole, never fails it.
A stage is late when it missed two runs (:func:`stage_lateness`); cron
schedules are read backwards from now (:func:`last_fire_times`). Import these
names from :mod:`biomem.health.resources`.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from biomem.config.filecfg import cron_trigger, parse_schedule
from biomem.health._check_base import REFUSING_STATES, BaseCheck, error_text
from biomem.health.model import ComponentHealth, Measurement, Status
from biomem.pipeline.runner import STAGES
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.resilience.errors import BiomemError

if TYPE_CHECKING:
    from biomem.app import App

__all__ = ["LATE_GRACE_S", "PipelineCheck", "last_fire_times", "stage_lateness"]

LATE_GRACE_S = 60.0  # scheduling slack before a stage counts as late
_SUCCESS_STATUSES = ("succeeded", "deferred")
_CRON_LOOKBACK = timedelta(days=9 * 366)


@functools.lru_cache(maxsize=64)
def _cron(expression: str) -> Any:
    """The trigger of ``expression``, or None when it never fires (``0 0 31 2 *``)."""
    trigger = cron_trigger(expression)
    # Searching for a fire time that never comes takes long: once per expression.
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        return None
    return trigger


def last_fire_times(expression: str, now: datetime) -> tuple[datetime, datetime] | None:
    """The last two times at or before ``now`` a five-field cron expression (UTC) fired.

    Read as the scheduler reads it (APScheduler 3's ``from_crontab``, UTC).
    APScheduler 3 only looks forward, so fire times are walked from ``now``
    minus a span that grows until it holds two of them (up to
    :data:`_CRON_LOOKBACK`, which covers two 29ths of February).
    """
    trigger = _cron(expression)
    if trigger is None:
        return None
    span = timedelta(minutes=2)
    while True:
        fires: list[datetime] = []
        at: datetime | None = trigger.get_next_fire_time(None, now - span)
        while at is not None and at <= now:
            fires = [*fires[-1:], at]
            # Cron has minute resolution: a second on finds the next one.
            at = trigger.get_next_fire_time(None, at + timedelta(seconds=1))
        if len(fires) == 2:
            return fires[0], fires[1]
        if span >= _CRON_LOOKBACK:
            return None
        span = min(span * 4, _CRON_LOOKBACK)


def stage_lateness(schedule: str, reference: datetime, now: datetime) -> tuple[bool, float | None]:
    """(late, expected period in seconds) of a stage last successful at ``reference``.

    An interval schedule is late when ``now - reference > 2 × interval + grace``.
    A cron schedule is late when neither of its last two fires ended in a
    success (``reference`` before the earlier one) and the later one is more
    than the grace old: the same "two runs missed" rule, without flagging a
    weekday schedule every Monday. The period reported for cron is the time
    between its last two fires.
    """
    kind, value = parse_schedule(schedule)
    if kind == "interval":
        period = float(value)
        return (now - reference).total_seconds() > 2 * period + LATE_GRACE_S, period
    fires = last_fire_times(str(value), now)
    if fires is None:
        return False, None
    earlier, later = fires
    late = reference < earlier and (now - later).total_seconds() > LATE_GRACE_S
    return late, (later - earlier).total_seconds()


_RUNS_SQL = (
    "SELECT stage,"
    " max(finished_at) FILTER (WHERE status IN (?, ?)),"
    " min(started_at),"
    " arg_max(status, id)"
    " FROM runs WHERE stage IN ({stages}) GROUP BY stage"
)


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


class PipelineCheck(BaseCheck):
    """The pipeline (optional): stages on schedule, dead letters, open breakers."""

    name = "pipeline"
    component_type = "component"
    required = False
    timeout_s = 3.0

    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def stages(self) -> list[str]:
        """The stages watched: every pipeline stage, and ingest when PostgreSQL is configured."""
        names = list(STAGES)
        return ["ingest", *names] if self.app.postgres is not None else names

    def _read(
        self, stages: list[str]
    ) -> tuple[dict[str, tuple[Any, ...]], dict[DeadLetterStatus, int], datetime | None]:
        sql = _RUNS_SQL.format(stages=", ".join("?" for _ in stages))
        rows = self.app.store.execute(sql, [*_SUCCESS_STATUSES, *stages])
        return (
            {str(row[0]): row for row in rows},
            self.app.dlq.counts(),
            self.app.dlq.oldest_pending(),
        )

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        stages = self.stages()
        try:
            runs, letters, oldest = await self._in_thread(lambda: self._read(stages))
        except (BiomemError, TimeoutError) as exc:
            why = "store busy" if isinstance(exc, TimeoutError) else error_text(exc)
            return self._result(Status.UNKNOWN, started, output=f"pipeline state unreadable: {why}")
        now = self._wall_clock()
        complaints: list[str] = []
        per_stage: dict[str, dict[str, Any]] = {}
        late: list[str] = []
        for stage in stages:
            entry = self._stage_entry(stage, runs.get(stage), now, complaints)
            per_stage[stage] = entry
            if entry["status"] == "late":
                late.append(stage)

        pending = letters.get(DeadLetterStatus.PENDING, 0)
        dead = letters.get(DeadLetterStatus.DEAD, 0)
        oldest_age = None if oldest is None else round((now - oldest).total_seconds(), 1)
        if dead:
            complaints.append(f"{dead} dead letter(s) gave up: replay them by hand")
        open_breakers = [
            {"name": b.name, "state": b.state.value, "retry_after_s": round(b.retry_after(), 3)}
            for b in self.app.guards.breakers
            if b.state in REFUSING_STATES
        ]
        never = [s for s, e in per_stage.items() if e["status"] == "unknown"]
        status = Status.DEGRADED if late or dead else Status.HEALTHY
        if not complaints and never:
            complaints.append(f"not run yet: {', '.join(never)}")
        measurements = [
            Measurement(
                name="deadLetters",
                value=pending,
                status=Status.DEGRADED if dead else Status.HEALTHY,
                output=f"{dead} dead" if dead else None,
            ),
            Measurement(name="oldestDeadLetterAge", value=oldest_age, unit="s"),
            Measurement(name="openBreakers", value=len(open_breakers)),
            Measurement(
                name="lateStages",
                value=len(late),
                status=Status.DEGRADED if late else Status.HEALTHY,
                output=", ".join(late) or None,
            ),
        ]
        details = {
            "stages": per_stage,
            "dead_letters": {s.value: n for s, n in sorted(letters.items())},
            "open_breakers": open_breakers,
        }
        return self._result(
            status,
            started,
            output="; ".join(complaints) or None,
            measurements=measurements,
            details=details,
        )

    def _stage_entry(
        self, stage: str, row: tuple[Any, ...] | None, now: datetime, complaints: list[str]
    ) -> dict[str, Any]:
        schedule = str(getattr(self.app.settings.schedules, stage))
        last_success = row[1] if row is not None else None
        first_started = row[2] if row is not None else None
        entry: dict[str, Any] = {
            "schedule": schedule,
            "last_success": None if last_success is None else last_success.isoformat(),
            "last_status": None if row is None else row[3],
        }
        # Never succeeded: judged from its first run; never run at all: unknown.
        reference = last_success if last_success is not None else first_started
        if reference is None:
            entry["status"] = "unknown"
            return entry
        try:
            late, period = stage_lateness(schedule, reference, now)
        except ValueError:  # validated at start-up; a bad one is not this check's to fail
            entry["status"] = "unknown"
            return entry
        entry["period_s"] = period
        entry["age_s"] = round((now - reference).total_seconds(), 1)
        entry["status"] = "late" if late else "ok"
        if late:
            since = (
                f"last success {_age(now, last_success)} ago"
                if last_success is not None
                else f"no success since its first run {_age(now, reference)} ago"
            )
            complaints.append(f"stage {stage} late: {since}")
        return entry
