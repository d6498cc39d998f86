"""Prometheus metrics, computed at scrape time from the objects the process already has.

Nothing here counts on the call path: :class:`BiomemCollector` reads the
breakers, retry budgets, error log and health snapshot when Prometheus
scrapes, and the runs and dead-letter tables with one bounded read each.
A family whose source fails (the store is closed or busy) is left out of
that scrape and logged; the others are still served.

Breaker calls are exposed twice: as counters since the process started
(``biomem_breaker_calls_total{outcome}``, from the breaker's lifetime totals,
which its fast path keeps for free) and as gauges of the sliding window
(``biomem_breaker_window_calls``), which go down as the window slides.

Stage runs are folded in from the runs table incrementally (only rows new
since the last scrape): counts by status, items by source, the last
duration, and a histogram of durations
(``biomem_stage_run_duration_seconds``) bucketed in SQL.

Retries and retry-budget refusals are counted from the retriers' events
(:class:`biomem.guards.RetryCounts`); alerts firing, delivery attempts and
pending notifications come from the alerting service when one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from biomem._metrics_runs import RUNS_SQL, STAGE_DURATION_BUCKETS, RunTotals
from biomem.app import App
from biomem.bounded import BoundedReader
from biomem.health.model import Status
from biomem.health.monitor import HealthMonitor
from biomem.resilience.breaker import BreakerState
from biomem.resilience.deadletter import DeadLetterStatus

__all__ = [
    "HEALTH_STATUS_VALUES",
    "STAGE_DURATION_BUCKETS",
    "AlertMetricsSource",
    "BiomemCollector",
    "BoundedReader",  # from biomem.bounded, kept here for existing imports
    "build_registry",
]

logger = logging.getLogger(__name__)

# biomem_health_status: a number per status that orders like the alerts read it.
HEALTH_STATUS_VALUES: dict[Status, int] = {
    Status.HEALTHY: 0,
    Status.DEGRADED: 1,
    Status.UNHEALTHY: 2,
    Status.CRITICAL: 3,
    Status.UNKNOWN: -1,
}


class AlertMetricsSource(Protocol):
    """What the collector reads from the alerting service."""

    def firing_by_severity(self) -> Mapping[str, int]: ...

    def delivery_attempts(self) -> Mapping[tuple[str, str], int]: ...

    def pending_notifications(self) -> int: ...


class BiomemCollector:
    """The biomem metric families, computed at each scrape.

    Args:
        app: breakers, budgets, error log, store and dead letters are read from it.
        monitor: the health snapshot.
        reader: bounds the store reads (a default one waits 2 s).
        wall_clock: for the age of the oldest pending dead letter.
        recovery_counts: recovery decisions by (rule, action, result), when recovery runs.
    """

    def __init__(
        self,
        app: App,
        monitor: HealthMonitor,
        *,
        reader: BoundedReader | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        alerts: AlertMetricsSource | None = None,
        recovery_counts: Callable[[], Mapping[tuple[str, str, str], int]] | None = None,
    ) -> None:
        self._app = app
        self._recovery_counts = recovery_counts
        self._monitor = monitor
        self._alerts = alerts
        self._reader = reader if reader is not None else BoundedReader()
        self._wall_clock = wall_clock
        self._runs = RunTotals()
        self._families: tuple[tuple[str, Callable[[], list[Metric]]], ...] = (
            ("breakers", self._breakers),
            ("retry_budgets", self._budgets),
            ("dead_letters", self._dead_letters),
            ("stages", self._stages),
            ("health", self._health),
            ("error_events", self._error_events),
            ("retries", self._retries),
            ("recovery", self._recovery),
        )
        if alerts is not None:
            self._families += (
                ("alerts", self._alert_families),
                ("alert_outbox", self._alert_outbox),
            )

    def describe(self) -> list[Metric]:
        """The families without samples: registering never touches the store."""
        return [
            GaugeMetricFamily("biomem_breaker_state", "", labels=["breaker", "state"]),
            CounterMetricFamily("biomem_breaker_calls", "", labels=["breaker", "outcome"]),
            GaugeMetricFamily("biomem_breaker_window_calls", "", labels=["breaker", "outcome"]),
            CounterMetricFamily("biomem_breaker_not_permitted_calls", "", labels=["breaker"]),
            GaugeMetricFamily("biomem_breaker_failure_rate", "", labels=["breaker"]),
            GaugeMetricFamily("biomem_breaker_slow_call_rate", "", labels=["breaker"]),
            GaugeMetricFamily("biomem_retry_budget_available", "", labels=["dependency"]),
            GaugeMetricFamily("biomem_dead_letters", "", labels=["status"]),
            GaugeMetricFamily("biomem_dead_letter_oldest_pending_age_seconds", ""),
            CounterMetricFamily("biomem_stage_runs", "", labels=["stage", "status"]),
            GaugeMetricFamily("biomem_stage_last_run_duration_seconds", "", labels=["stage"]),
            HistogramMetricFamily("biomem_stage_run_duration_seconds", "", labels=["stage"]),
            CounterMetricFamily("biomem_stage_items", "", labels=["stage", "source"]),
            GaugeMetricFamily("biomem_health_status", "", labels=["component"]),
            GaugeMetricFamily("biomem_health_up", "", labels=["component"]),
            CounterMetricFamily("biomem_error_events", "", labels=["component", "kind"]),
            CounterMetricFamily("biomem_retries", "", labels=["dependency"]),
            CounterMetricFamily("biomem_retry_budget_exhausted", "", labels=["dependency"]),
            *(
                [
                    GaugeMetricFamily("biomem_alerts_firing", "", labels=["severity"]),
                    CounterMetricFamily(
                        "biomem_alert_notifications", "", labels=["receiver", "result"]
                    ),
                    GaugeMetricFamily("biomem_alert_notifications_pending", ""),
                ]
                if self._alerts is not None
                else []
            ),
            CounterMetricFamily("biomem_recovery_actions", "", labels=["rule", "action", "result"]),
        ]

    def collect(self) -> Iterator[Metric]:
        for name, build in self._families:
            try:
                families = build()  # whole families or none: never half of one
            except Exception:  # a failing source costs its families, not the scrape
                logger.exception("metrics family %s skipped", name)
                continue
            yield from families

    def _breakers(self) -> list[Metric]:
        state = GaugeMetricFamily(
            "biomem_breaker_state",
            "1 for the breaker's current state, 0 for the others.",
            labels=["breaker", "state"],
        )
        calls = CounterMetricFamily(
            "biomem_breaker_calls",
            "Calls through the breaker since the process started, by outcome: success and"
            " failure (recorded), slow (overlaps both), ignored (counted neither way),"
            " not_permitted (refused).",
            labels=["breaker", "outcome"],
        )
        window = GaugeMetricFamily(
            "biomem_breaker_window_calls",
            "Calls in the breaker's sliding window (slow overlaps success and failure).",
            labels=["breaker", "outcome"],
        )
        refused = CounterMetricFamily(
            "biomem_breaker_not_permitted_calls",
            "Calls the breaker refused since the process started.",
            labels=["breaker"],
        )
        failure = GaugeMetricFamily(
            "biomem_breaker_failure_rate",
            "Failed / calls in the window; -1 below the minimum number of calls.",
            labels=["breaker"],
        )
        slow = GaugeMetricFamily(
            "biomem_breaker_slow_call_rate",
            "Slow / calls in the window; -1 below the minimum number of calls.",
            labels=["breaker"],
        )
        for breaker in self._app.guards.breakers.all():
            m = breaker.metrics()
            for member in BreakerState:
                state.add_metric([breaker.name, member.value], 1.0 if m.state is member else 0.0)
            for outcome, count in (
                ("success", m.total_calls - m.total_failed_calls),
                ("failure", m.total_failed_calls),
                ("slow", m.total_slow_calls),
                ("ignored", m.total_ignored_calls),
                ("not_permitted", m.not_permitted_calls),
            ):
                calls.add_metric([breaker.name, outcome], count)
            window.add_metric([breaker.name, "success"], m.calls - m.failed_calls)
            window.add_metric([breaker.name, "failure"], m.failed_calls)
            window.add_metric([breaker.name, "slow"], m.slow_calls)
            refused.add_metric([breaker.name], m.not_permitted_calls)
            failure.add_metric([breaker.name], m.failure_rate)
            slow.add_metric([breaker.name], m.slow_call_rate)
        return [state, calls, window, refused, failure, slow]

    def _budgets(self) -> list[Metric]:
        family = GaugeMetricFamily(
            "biomem_retry_budget_available",
            "Retries the dependency's retry budget allows right now.",
            labels=["dependency"],
        )
        guards = self._app.guards
        for policy in (guards.postgresql, guards.duckdb, guards.ollama):
            family.add_metric([policy.name], policy.budget.available())
        return [family]

    def _dead_letters(self) -> list[Metric]:
        dlq = self._app.dlq
        counts, oldest = self._reader.call(lambda: (dlq.counts(), dlq.oldest_pending()))
        letters = GaugeMetricFamily(
            "biomem_dead_letters", "Dead letters by status.", labels=["status"]
        )
        for status in DeadLetterStatus:
            letters.add_metric([status.value], counts.get(status, 0))
        age = 0.0 if oldest is None else (self._wall_clock() - oldest).total_seconds()
        oldest_age = GaugeMetricFamily(
            "biomem_dead_letter_oldest_pending_age_seconds",
            "Age of the oldest pending dead letter; 0 when none is pending.",
            value=max(0.0, age),
        )
        return [letters, oldest_age]

    def _stages(self) -> list[Metric]:
        totals = self._runs
        store = self._app.store
        # One scrape folds at a time: two folding the same rows would count them twice.
        if not totals.lock.acquire(timeout=self._reader.timeout_s):
            raise TimeoutError("another scrape is still reading the runs table")
        try:
            params = [totals.watermark, totals.running]
            rows = self._reader.call(lambda: store.execute(RUNS_SQL, params))
            totals.fold(rows)
            runs = dict(totals.runs)
            items = dict(totals.items)
            last = dict(totals.last)
            durations = {stage: d.copy() for stage, d in totals.durations.items()}
        finally:
            totals.lock.release()
        runs_family = CounterMetricFamily(
            "biomem_stage_runs",
            "Runs of each stage that ended, by status.",
            labels=["stage", "status"],
        )
        for (stage, status), count in sorted(runs.items()):
            runs_family.add_metric([stage, status], count)
        duration = GaugeMetricFamily(
            "biomem_stage_last_run_duration_seconds",
            "Duration of the stage's most recent finished run.",
            labels=["stage"],
        )
        for stage, (_, seconds) in sorted(last.items()):
            duration.add_metric([stage], seconds)
        histogram = HistogramMetricFamily(
            "biomem_stage_run_duration_seconds",
            "Durations of the stage's runs that ended (any status), as recorded in the store.",
            labels=["stage"],
        )
        for stage, d in sorted(durations.items()):
            histogram.add_metric(
                [stage],
                buckets=[
                    *(
                        (repr(bound), n)  # "0.01", "1.0": as prometheus_client writes le
                        for bound, n in zip(STAGE_DURATION_BUCKETS, d.buckets, strict=True)
                    ),
                    ("+Inf", d.count),
                ],
                sum_value=d.total,
            )
        items_family = CounterMetricFamily(
            "biomem_stage_items",
            "Items the stage's ended runs processed, by the LLM or by the fallback.",
            labels=["stage", "source"],
        )
        for (stage, source), count in sorted(items.items()):
            items_family.add_metric([stage, source], count)
        return [runs_family, duration, histogram, items_family]

    def _health(self) -> list[Metric]:
        snapshot = self._monitor.snapshot()
        status = GaugeMetricFamily(
            "biomem_health_status",
            "0 healthy, 1 degraded, 2 unhealthy, 3 critical, -1 unknown.",
            labels=["component"],
        )
        up = GaugeMetricFamily(
            "biomem_health_up",
            "1 while the component works (healthy or degraded), else 0.",
            labels=["component"],
        )
        pairs = [*((c.name, c.status) for c in snapshot.components.values())]
        pairs.append(("overall", snapshot.status))
        for name, value in pairs:
            status.add_metric([name], HEALTH_STATUS_VALUES[value])
            up.add_metric([name], 1.0 if value in (Status.HEALTHY, Status.DEGRADED) else 0.0)
        return [status, up]

    def _error_events(self) -> list[Metric]:
        family = CounterMetricFamily(
            "biomem_error_events",
            "Error events recorded at dependency boundaries, by component and kind.",
            labels=["component", "kind"],
        )
        for (component, kind), count in sorted(self._app.guards.errors.counts().items()):
            family.add_metric([component, kind.value], count)
        return [family]

    def _retries(self) -> list[Metric]:
        counts = self._app.guards.retries
        retries = CounterMetricFamily(
            "biomem_retries",
            "Retries scheduled after a failed attempt, by dependency.",
            labels=["dependency"],
        )
        exhausted = CounterMetricFamily(
            "biomem_retry_budget_exhausted",
            "Retries refused by the dependency's retry budget (the call gave up).",
            labels=["dependency"],
        )
        guards = self._app.guards
        names = [p.name for p in (guards.postgresql, guards.duckdb, guards.ollama)]
        scheduled, refused = counts.retries(), counts.budget_exhausted()
        for name in sorted({*names, *scheduled, *refused}):
            retries.add_metric([name], scheduled.get(name, 0))
            exhausted.add_metric([name], refused.get(name, 0))
        return [retries, exhausted]

    def _alert_families(self) -> list[Metric]:
        assert self._alerts is not None
        firing = GaugeMetricFamily(
            "biomem_alerts_firing",
            "Alerts firing and not silenced, by severity.",
            labels=["severity"],
        )
        for severity, count in sorted(self._alerts.firing_by_severity().items()):
            firing.add_metric([severity], count)
        sent = CounterMetricFamily(
            "biomem_alert_notifications",
            "Webhook delivery attempts by receiver: sent (2xx) or failed (retried or refused).",
            labels=["receiver", "result"],
        )
        for (receiver, result), count in sorted(self._alerts.delivery_attempts().items()):
            sent.add_metric([receiver, result], count)
        return [firing, sent]

    def _alert_outbox(self) -> list[Metric]:
        assert self._alerts is not None
        pending = self._reader.call(self._alerts.pending_notifications)
        return [
            GaugeMetricFamily(
                "biomem_alert_notifications_pending",
                "Notifications waiting in the outbox for delivery.",
                value=pending,
            )
        ]

    def _recovery(self) -> list[Metric]:
        family = CounterMetricFamily(
            "biomem_recovery_actions",
            "Recovery decisions since start by rule, action and result: done, failed, or the"
            " reason a step was skipped (cooldown, attempt_limit, guard, dry_run, unavailable,"
            " disabled).",
            labels=["rule", "action", "result"],
        )
        counts = self._recovery_counts() if self._recovery_counts is not None else {}
        for (rule, action, result), count in sorted(counts.items()):
            family.add_metric([rule, action, result], count)
        return [family]


def build_registry(
    app: App,
    monitor: HealthMonitor,
    *,
    process_metrics: bool = True,
    alerts: AlertMetricsSource | None = None,
    recovery_counts: Callable[[], Mapping[tuple[str, str, str], int]] | None = None,
) -> CollectorRegistry:
    """A registry of its own with the biomem collector (and the process/platform/GC ones)."""
    registry = CollectorRegistry()
    registry.register(BiomemCollector(app, monitor, alerts=alerts, recovery_counts=recovery_counts))
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
