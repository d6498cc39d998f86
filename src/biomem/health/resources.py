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

The pipeline check lives in :mod:`biomem.health._check_pipeline`; import it,
and its lateness helpers, from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from biomem.config.filecfg import ThresholdSettings
from biomem.health._check_base import BaseCheck
from biomem.health._check_pipeline import (
    LATE_GRACE_S,
    PipelineCheck,
    last_fire_times,
    stage_lateness,
)
from biomem.health.model import ComponentHealth, Measurement, Status

__all__ = [
    "LATE_GRACE_S",
    "CpuWindow",
    "PipelineCheck",
    "SystemResourcesCheck",
    "last_fire_times",
    "stage_lateness",
]


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
