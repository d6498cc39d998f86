"""Checks of the process's own state: its machine's resources and its pipeline's progress.

``system_resources`` (memory, disk, CPU, load, file descriptors) is a
*required* component: over a critical threshold the process cannot do its
job safely (consolidation and dreams pause), so the whole reports ``fail``.
``pipeline`` (stages on schedule, dead letters, open breakers) is optional:
a late stage or a letter that gave up degrades the whole, never fails it.

CPU is measured **sustained**, not as one instant: :class:`CpuWindow` keeps
``psutil.cpu_times()`` samples taken at each run and reports the busy share of
CPU time between now and the newest sample at least one monitor interval old
(or the oldest one kept). A spike shorter than the interval is averaged out;
a load that lasts the interval is not. Only the very first run, with no
earlier sample worth comparing, measures a short span on the spot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from biomem.config.filecfg import ThresholdSettings, cron_trigger, parse_schedule
from biomem.health.checks import REFUSING_STATES, BaseCheck, error_text
from biomem.health.model import ComponentHealth, Measurement, Status
from biomem.pipeline.runner import STAGES
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.resilience.errors import BiomemError

if TYPE_CHECKING:
    from biomem.app import App

__all__ = [
    "LATE_GRACE_S",
    "CpuWindow",
    "PipelineCheck",
    "SystemResourcesCheck",
    "last_fire_times",
    "stage_lateness",
]

LATE_GRACE_S = 60.0  # scheduling slack before a stage counts as late
_SUCCESS_STATUSES = ("succeeded", "deferred")
_CRON_LOOKBACK = timedelta(days=9 * 366)

# Open file descriptors against the soft RLIMIT_NOFILE: past these shares the
# next socket or DuckDB file open fails, which no threshold setting changes.
_FD_DEGRADED_SHARE = 0.80
_FD_CRITICAL_SHARE = 0.95


def _busy_and_total(times: Any) -> tuple[float, float]:
    """CPU seconds busy and in all, as psutil.cpu_percent counts them."""
    total = float(sum(times))
    # Linux counts guest time inside user/nice as well: not twice.
    total -= float(getattr(times, "guest", 0.0)) + float(getattr(times, "guest_nice", 0.0))
    idle = float(getattr(times, "idle", 0.0)) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


@dataclass(frozen=True, slots=True)
class _CpuSample:
    at: float  # monotonic seconds
    busy: float  # CPU seconds busy, all CPUs together
    total: float  # CPU seconds elapsed, all CPUs together


class CpuWindow:
    """CPU utilisation averaged over (at least) the last ``window_s`` seconds.

    Args:
        window_s: the span to average over; the monitor interval.
        cpu_times: system-wide CPU times (``psutil.cpu_times``).
        clock: monotonic seconds.
        sleep: waits for the first, short measurement.
        min_span_s: a shorter span since the baseline is measured afresh.
    """

    def __init__(
        self,
        window_s: float,
        *,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_span_s: float = 0.25,
    ) -> None:
        self.window_s = window_s
        self._cpu_times = cpu_times
        self._clock = clock
        self._sleep = sleep
        self._min_span_s = min_span_s
        # Checks may run from the monitor's thread and an on-demand request at once.
        self._lock = threading.Lock()
        self._samples: deque[_CpuSample] = deque(maxlen=1024)
        self._samples.append(self._sample())

    def _sample(self) -> _CpuSample:
        busy, total = _busy_and_total(self._cpu_times())
        return _CpuSample(self._clock(), busy, total)

    def utilization(self) -> tuple[float, float]:
        """Return (percent busy, seconds averaged over); blocks only with no older sample."""
        with self._lock:
            now = self._sample()
            cutoff = now.at - self.window_s
            # Keep the newest sample at least a window old as the baseline, drop older ones.
            while len(self._samples) >= 2 and self._samples[1].at <= cutoff:
                self._samples.popleft()
            base = self._samples[0] if self._samples else now
            if now.at - base.at < self._min_span_s:
                base = now
                self._sleep(self._min_span_s)
                now = self._sample()
            self._samples.append(now)
        busy, total = now.busy - base.busy, now.total - base.total
        percent = 0.0 if total <= 0 else min(100.0, max(0.0, 100.0 * busy / total))
        return percent, now.at - base.at


def _grade(value: float, degraded: float, critical: float) -> Status:
    if value > critical:
        return Status.CRITICAL
    if value > degraded:
        return Status.DEGRADED
    return Status.HEALTHY


def _fd_limit() -> int | None:
    try:
        import resource  # Unix only
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


@dataclass(slots=True)
class _Reading:
    memory: float | None = None
    disk: float | None = None
    cpu: float | None = None
    cpu_span_s: float | None = None
    load: tuple[float, float, float] | None = None
    fds: int | None = None
    fd_limit: int | None = None
    problems: tuple[str, ...] = ()


class SystemResourcesCheck(BaseCheck):
    """Memory, disk (of the data directory), sustained CPU, load and file descriptors.

    Args:
        data_dir: the directory holding the store; its filesystem's use is measured.
        thresholds: degraded/critical percentages for memory, disk and CPU.
        cpu: the CPU window (built over ``window_s`` when not given).
        window_s: the span CPU is averaged over; the monitor interval.
    """

    name = "system_resources"
    component_type = "system"
    required = True
    timeout_s = 1.0

    def __init__(
        self,
        data_dir: Path,
        thresholds: ThresholdSettings,
        *,
        cpu: CpuWindow | None = None,
        window_s: float = 15.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.thresholds = thresholds
        self.cpu = cpu if cpu is not None else CpuWindow(window_s)
        self._process = psutil.Process()

    def _read(self) -> _Reading:
        """Every measure on its own: one that cannot be read leaves the others."""
        out = _Reading()
        problems: list[str] = []
        try:
            out.memory = float(psutil.virtual_memory().percent)
        except (OSError, psutil.Error) as exc:
            problems.append(f"memory unreadable ({type(exc).__name__})")
        try:
            out.disk = float(psutil.disk_usage(str(self.data_dir)).percent)
        except (OSError, psutil.Error) as exc:
            problems.append(f"disk of the data directory unreadable ({type(exc).__name__})")
        try:
            out.cpu, out.cpu_span_s = self.cpu.utilization()
        except (OSError, psutil.Error) as exc:
            problems.append(f"cpu unreadable ({type(exc).__name__})")
        with contextlib.suppress(OSError, AttributeError):  # not on every platform
            out.load = os.getloadavg()
        try:
            out.fds = int(self._process.num_fds())
            out.fd_limit = _fd_limit()
        except (OSError, AttributeError, psutil.Error):
            pass  # num_fds is Unix only
        out.problems = tuple(problems)
        return out

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        reading = await asyncio.to_thread(self._read)
        t = self.thresholds
        measurements: list[Measurement] = []
        complaints: list[str] = list(reading.problems)

        def percent(
            name: str,
            label: str,
            value: float | None,
            deg: float,
            crit: float,
            *,
            can_fail: bool = True,
        ) -> None:
            if value is None:
                measurements.append(
                    Measurement(name=name, value=None, unit="percent", status=Status.UNKNOWN)
                )
                return
            status = _grade(value, deg, crit)
            output = None
            if status is not Status.HEALTHY:
                which = "critical" if status is Status.CRITICAL else "degraded"
                limit = crit if status is Status.CRITICAL else deg
                output = f"{label} {value:.1f}% > {which} threshold {limit:g}%"
                if status is Status.CRITICAL and not can_fail:
                    # A saturated CPU slows the work but does not stop it: failing
                    # /health for it would make probes drop a busy, working process.
                    status = Status.DEGRADED
                    output += " (busy, not failing: heavy stages wait)"
                complaints.append(output)
            measurements.append(
                Measurement(
                    name=name, value=round(value, 1), unit="percent", status=status, output=output
                )
            )

        percent(
            "memoryUtilization",
            "memory",
            reading.memory,
            t.memory_degraded_percent,
            t.memory_critical_percent,
        )
        percent(
            "diskUtilization",
            "disk of the data directory",
            reading.disk,
            t.disk_degraded_percent,
            t.disk_critical_percent,
        )
        percent(
            "cpuUtilization",
            "cpu",
            reading.cpu,
            t.cpu_degraded_percent,
            t.cpu_critical_percent,
            can_fail=False,
        )
        measurements.append(
            Measurement(
                name="loadAverage",
                value=None if reading.load is None else round(reading.load[0], 2),
            )
        )
        measurements.append(self._fd_measurement(reading, complaints))

        statuses = [m.status for m in measurements if m.status is not Status.UNKNOWN]
        status = max(statuses, key=lambda s: s.rank) if statuses else Status.UNKNOWN
        details: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "cpu_window_s": None if reading.cpu_span_s is None else round(reading.cpu_span_s, 2),
            "cpu_count": os.cpu_count(),
            "load_average": None if reading.load is None else [round(x, 2) for x in reading.load],
            "fd_limit": reading.fd_limit,
            "thresholds": t.model_dump(),
        }
        return self._result(
            status,
            started,
            output="; ".join(complaints) or None,
            measurements=measurements,
            details=details,
        )

    @staticmethod
    def _fd_measurement(reading: _Reading, complaints: list[str]) -> Measurement:
        if reading.fds is None:
            return Measurement(name="openFileDescriptors", value=None, status=Status.UNKNOWN)
        status, output = Status.HEALTHY, None
        if reading.fd_limit is not None:
            status = _grade(reading.fds / reading.fd_limit, _FD_DEGRADED_SHARE, _FD_CRITICAL_SHARE)
            if status is not Status.HEALTHY:
                output = f"{reading.fds} of {reading.fd_limit} file descriptors open"
                complaints.append(output)
        return Measurement(
            name="openFileDescriptors", value=reading.fds, status=status, output=output
        )


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
