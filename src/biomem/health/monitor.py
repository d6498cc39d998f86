"""The monitor: runs every check concurrently, each under its own timeout, and keeps a snapshot.

Endpoints answer from the snapshot, so a hanging dependency never slows them:
its check times out and reports UNHEALTHY ("check timed out") while the
others report on time. With continuous monitoring a background thread runs
the checks every interval (with jitter) on an event loop of its own; status
changes are published to listeners.

Two bounded records per component: ``history``, the last ``history_size``
results (what /health/detailed lists and recovery's streaks read), and a
:class:`~biomem.health.timeline.StatusTimeline`, the last hour in one-minute
slots whatever the interval (what the status page's strip shows): at a 1 s
interval the hour is 3600 results, which neither consumer needs one by one.

Without it (``on_demand=True``, HEALTH_CONTINUOUS_MONITORING=false) the
endpoints ask :meth:`HealthMonitor.fresh_snapshot`: the checks run when the
last result is older than the interval, once for all concurrent requests
(:mod:`biomem.health._on_demand`), and their transitions reach the listeners
as usual.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from biomem.health._on_demand import OnDemandRuns
from biomem.health.model import (
    Check,
    ComponentHealth,
    HealthSnapshot,
    Status,
    StatusTransition,
    aggregate,
)
from biomem.health.timeline import StatusTimeline, TimelineSlot

__all__ = ["HealthMonitor", "TransitionListener"]

logger = logging.getLogger(__name__)


class TransitionListener(Protocol):
    def __call__(self, transition: StatusTransition) -> None: ...


class HealthMonitor:
    """Runs the checks and keeps the latest snapshot, a bounded history and the last hour.

    Args:
        checks: the checks, run concurrently.
        interval_s: seconds between runs of the background loop; on demand,
            how long a result is reused.
        history_size: recent results kept per component (:meth:`history`); the
            last hour (:meth:`timeline`) is kept apart, in minutes.
        wall_clock: times people read (checked_at, transitions).
        on_demand: no background loop: :meth:`fresh_snapshot` runs the checks
            when the result is stale.
        clock: monotonic seconds, for the age of an on-demand result.
    """

    def __init__(
        self,
        checks: Sequence[Check],
        *,
        interval_s: float = 15.0,
        history_size: int = 240,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        listeners: Iterable[TransitionListener] = (),
        on_demand: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = list(checks)
        self.interval_s = interval_s
        self._wall_clock = wall_clock
        self._listeners = list(listeners)
        self._lock = threading.Lock()
        now = wall_clock()
        self._snapshot = HealthSnapshot(
            status=Status.UNKNOWN,
            components={
                c.name: ComponentHealth(
                    name=c.name,
                    component_type=c.component_type,
                    status=Status.UNKNOWN,
                    required=c.required,
                    checked_at=now,
                    duration_ms=0.0,
                    output="not checked yet",
                )
                for c in self.checks
            },
            taken_at=now,
        )
        self._history_size = history_size
        self._history: dict[str, deque[tuple[datetime, Status]]] = {
            name: deque(maxlen=history_size) for name in [*self._snapshot.components, "overall"]
        }
        slowest = max((c.timeout_s for c in self.checks), default=0.0)
        # A result is in effect until the next one is due: the loop waits up to
        # 1.1 intervals after a run that may take the slowest timeout; twice the
        # interval leaves room for a slow run without hiding a stopped monitor.
        self._stale_after_s = 2 * interval_s + slowest
        self._timelines: dict[str, StatusTimeline] = {
            name: StatusTimeline(stale_after_s=self._stale_after_s)
            for name in [*self._snapshot.components, "overall"]
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_demand: OnDemandRuns | None = None
        if on_demand:
            self._on_demand = OnDemandRuns(
                lambda: asyncio.run(self.run_once()),
                interval_s=interval_s,
                wait_s=slowest + 1.0,
                clock=clock,
            )

    @property
    def on_demand(self) -> bool:
        """True when the checks run on request rather than in a background loop."""
        return self._on_demand is not None

    @property
    def on_demand_runs(self) -> OnDemandRuns | None:
        """The on-request runs (``runs`` started, callers ``waiting``), or None."""
        return self._on_demand

    def add_listener(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    def snapshot(self) -> HealthSnapshot:
        """The latest results; never blocks on a dependency."""
        with self._lock:
            return self._snapshot

    def fresh_snapshot(self) -> HealthSnapshot:
        """The snapshot to answer a request with (blocking; call it from a thread).

        On demand, the checks run first when the last result is older than the
        interval (one run shared by every concurrent caller, waited for at most
        the slowest check's timeout and a second); otherwise, :meth:`snapshot`.
        """
        if self._on_demand is not None:
            self._on_demand.wait()
        return self.snapshot()

    async def fresh_snapshot_async(self) -> HealthSnapshot:
        """:meth:`fresh_snapshot` for a coroutine: never blocks the event loop."""
        if self._on_demand is not None:
            await self._on_demand.wait_async()
        return self.snapshot()

    def max_age_s(self) -> int:
        """Seconds a response may be cached (Cache-Control max-age).

        The interval with a background loop; on demand, what is left of the
        result's interval, so a cache never keeps it past its reuse.
        """
        if self._on_demand is None:
            return max(0, int(self.interval_s))
        return int(self._on_demand.remaining_s())

    def result_is_current(self) -> bool:
        """False only on demand, once the last result has outlived the interval."""
        return self._on_demand is None or self._on_demand.remaining_s() > 0

    def history(self, component: str) -> list[tuple[datetime, Status]]:
        """(time, status) of the component's recent results, oldest first."""
        with self._lock:
            return list(self._history.get(component, ()))

    def timeline(self, component: str, now: datetime | None = None) -> list[TimelineSlot]:
        """The component's last hour up to ``now`` (default: the wall clock), minute by minute.

        An unknown component gives an hour of gaps.
        """
        moment = now if now is not None else self._wall_clock()
        with self._lock:
            timeline = self._timelines.get(component)
            if timeline is None:
                timeline = StatusTimeline(stale_after_s=self._stale_after_s)
            return timeline.slots(moment)

    async def _run_check(self, check: Check) -> ComponentHealth:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout_s):
                return await check.run()
        except TimeoutError:
            output = f"check timed out after {check.timeout_s:g} s"
            status = Status.UNHEALTHY
        except Exception as exc:  # a check's bug must not hide the other components
            logger.exception("health check %s failed", check.name)
            output = f"check failed: {type(exc).__name__}"
            status = Status.UNKNOWN
        return ComponentHealth(
            name=check.name,
            component_type=check.component_type,
            status=status,
            required=check.required,
            checked_at=self._wall_clock(),
            duration_ms=(time.perf_counter() - started) * 1000,
            output=output,
        )

    async def run_once(self, names: Iterable[str] | None = None) -> HealthSnapshot:
        """Run the (named) checks concurrently and update the snapshot."""
        wanted = set(names) if names is not None else None
        chosen = [c for c in self.checks if wanted is None or c.name in wanted]
        results = await asyncio.gather(*(self._run_check(c) for c in chosen))
        return self._update(results)

    def _update(self, results: Sequence[ComponentHealth]) -> HealthSnapshot:
        now = self._wall_clock()
        transitions: list[StatusTransition] = []
        with self._lock:
            previous = self._snapshot
            components = dict(previous.components)
            for result in results:
                old = components.get(result.name)
                components[result.name] = result
                self._history.setdefault(result.name, deque(maxlen=self._history_size)).append(
                    (result.checked_at, result.status)
                )
                self._timeline(result.name).record(result.checked_at, result.status)
                if old is not None and old.status is not result.status:
                    transitions.append(
                        StatusTransition(
                            component=result.name,
                            previous=old.status,
                            current=result.status,
                            at=now,
                            output=result.output,
                        )
                    )
            overall = aggregate(components.values())
            if overall is not previous.status:
                transitions.append(
                    StatusTransition(
                        component="overall", previous=previous.status, current=overall, at=now
                    )
                )
            self._history["overall"].append((now, overall))
            self._timeline("overall").record(now, overall)
            self._snapshot = HealthSnapshot(status=overall, components=components, taken_at=now)
            snapshot = self._snapshot
        for transition in transitions:
            for listener in self._listeners:
                try:
                    listener(transition)
                except Exception:  # a subscriber must not break monitoring
                    logger.exception("health transition listener failed")
        return snapshot

    def _timeline(self, name: str) -> StatusTimeline:
        timeline = self._timelines.get(name)
        if timeline is None:
            timeline = self._timelines[name] = StatusTimeline(stale_after_s=self._stale_after_s)
        return timeline

    def start(self) -> None:
        """Run the checks now and then every interval, in a background thread.

        Raises:
            RuntimeError: the monitor runs on demand.
        """
        if self._on_demand is not None:
            raise RuntimeError("an on-demand monitor has no background loop")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="health-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        rng = random.Random()  # noqa: S311 - jitter, not cryptography
        while not self._stop.is_set():
            try:
                asyncio.run(self.run_once())
            except Exception:  # the loop never dies: log and go on
                logger.exception("health monitor pass failed")
            # Jitter: monitors started together do not probe together.
            self._stop.wait(self.interval_s * rng.uniform(0.9, 1.1))

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._on_demand is not None:
            self._on_demand.close(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
