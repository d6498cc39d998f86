"""Scheduling of ingest and the stages, and one-off passes over them.

Every job takes one lock for its whole run, so stage runs never interleave
and each reads what the stages before it committed. Jobs never overlap
themselves (``max_instances=1``), missed runs are coalesced into one, and a
failing run is logged and recorded while the schedule goes on: a background
loop never dies. On stop, the job in flight returns at its next batch
boundary (LLM calls in flight are cancelled, nothing half-written commits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from biomem.app import App
from biomem.config import Settings, parse_schedule
from biomem.config.filecfg import cron_trigger
from biomem.ingest import IngestCounts, PostgresSource, ingest_postgres
from biomem.logging import get_logger
from biomem.pipeline.base import Progress, StageResult
from biomem.pipeline.runner import STAGES, StageOutcome, run_stages
from biomem.resilience.errors import BiomemError, DatabaseUnavailable
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus, record_run

__all__ = ["Orchestrator", "run_postgres_ingest"]

log = get_logger(__name__)


def run_postgres_ingest(
    store: DuckDBStore,
    source: PostgresSource,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
) -> IngestCounts:
    """One ingest pass from PostgreSQL, recorded in the runs table."""
    event = stop or threading.Event()
    with record_run(store, "ingest") as run:
        counts = ingest_postgres(store, source, settings=settings.ingest, should_stop=event.is_set)
        run.counts = {"source": source.name, **counts.as_dict()}
        if event.is_set():
            run.status = RunStatus.INTERRUPTED
    return counts


def _trigger(expression: str) -> Any:
    kind, value = parse_schedule(expression)
    if kind == "interval":
        # Jitter: many instances (or stages) started together do not fire together.
        return IntervalTrigger(seconds=float(value), jitter=min(5.0, float(value) / 10))
    return cron_trigger(str(value))


class Orchestrator:
    """Runs ingest and the stages on their schedules, or once on demand.

    Work that fails because PostgreSQL is away (an ingest pass, a writeback) is
    also kept as a dead letter; the replay job re-runs the real operation once
    the dependency's breaker lets calls through again.
    """

    def __init__(self, app: App, *, stop: threading.Event | None = None) -> None:
        self._app = app
        self._store = app.store
        self._settings = app.settings
        self._postgres = app.postgres
        self._ollama = app.ollama_factory()
        self._source = (
            PostgresSource(app.postgres, app.settings.ingest.postgres)
            if app.postgres is not None
            else None
        )
        self.stop_event = stop or threading.Event()
        # Re-entrant: a replayed dead letter runs its operation inside the replay job.
        self._lock = threading.RLock()
        self._scheduler = BackgroundScheduler(timezone="UTC")
        app.replays.register("ingest_postgres", self._replay_ingest, replace=True)
        app.replays.register("writeback", self._replay_writeback, replace=True)

    def run_pass(
        self,
        stages: Sequence[str] = (),
        *,
        as_of: datetime | None = None,
        ingest: bool = True,
        progress_for: Callable[[str], Progress | None] = lambda _name: None,
    ) -> list[StageOutcome]:
        """Ingest (when PostgreSQL is configured) then run the stages in dependency order."""
        with self._lock:
            outcomes: list[StageOutcome] = []
            if ingest and self._source is not None and not self.stop_event.is_set():
                outcomes.append(self._ingest_outcome())
            moment = as_of or datetime.now(UTC)
            outcomes += run_stages(
                self._store,
                self._settings,
                stages,
                as_of=moment,
                ollama=self._ollama,
                stop=self.stop_event,
                postgres=self._postgres,
                progress_for=progress_for,
            )
            for outcome in outcomes:
                if outcome.stage == "writeback" and outcome.status == RunStatus.DEFERRED:
                    reason = str(outcome.result.detail.get("postgres_unavailable", "unavailable"))
                    self._dead_letter(
                        "writeback", {}, DatabaseUnavailable("postgresql", reason), "writeback"
                    )
            return outcomes

    def _dead_letter(
        self, operation: str, payload: dict[str, Any], error: BaseException, key: str
    ) -> None:
        try:
            self._app.dlq.put(
                operation, payload, error, idempotency_key=key, component="postgresql"
            )
        except BiomemError as exc:
            # The store itself is failing: the scheduled run retries anyway.
            log.error("dead_letter_put_failed", operation=operation, error=str(exc))

    def _replay_ingest(self, payload: dict[str, Any]) -> None:
        assert self._source is not None, "no PostgreSQL source configured"
        with self._lock:
            run_postgres_ingest(self._store, self._source, self._settings, stop=self.stop_event)

    def _replay_writeback(self, payload: dict[str, Any]) -> None:
        with self._lock:
            outcome = run_stages(
                self._store,
                self._settings,
                ["writeback"],
                as_of=datetime.now(UTC),
                ollama=None,
                stop=self.stop_event,
                postgres=self._postgres,
            )[0]
        if outcome.status != RunStatus.SUCCEEDED:
            detail = outcome.error or str(outcome.result.detail.get("postgres_unavailable"))
            raise DatabaseUnavailable("postgresql", f"writeback still deferred: {detail}")

    def replay_dead_letters(self) -> None:
        """Replay due dead letters whose dependency is healthy (the scheduled job)."""
        if self.stop_event.is_set():
            return
        try:
            with self._lock:
                report = self._app.dlq.replay_due(is_healthy=self._app.is_healthy)
        except BiomemError as exc:
            # The store itself fails (a full disk, its breaker open): catch, log, continue;
            # the letters wait, and the next run of this job tries again.
            log.error("dead_letter_replay_failed", error=str(exc))
            return
        if report.selected:
            log.info(
                "dead_letters_replayed",
                recovered=len(report.recovered),
                failed=len(report.failed),
                dead=len(report.dead),
                skipped=len(report.skipped),
            )

    def _ingest_outcome(self) -> StageOutcome:
        assert self._source is not None
        started = time.perf_counter()
        try:
            counts = run_postgres_ingest(
                self._store, self._source, self._settings, stop=self.stop_event
            )
        except BiomemError as exc:
            # Catch, log, continue: the next run resumes from the watermark.
            log.error("ingest_failed", source=self._source.name, error=str(exc))
            if getattr(exc, "transient", False):
                self._dead_letter(
                    "ingest_postgres",
                    {"source": self._source.name},
                    exc,
                    f"ingest:{self._source.name}",
                )
            return StageOutcome(
                "ingest", RunStatus.FAILED, StageResult(), time.perf_counter() - started, str(exc)
            )
        log.info("ingest_done", source=self._source.name, **counts.as_dict())
        result = StageResult(items=counts.good + counts.quarantined, detail=counts.as_dict())
        return StageOutcome("ingest", RunStatus.SUCCEEDED, result, time.perf_counter() - started)

    def _job(self, stages: Sequence[str], *, ingest: bool) -> Callable[[], None]:
        def job() -> None:
            if self.stop_event.is_set():
                return
            try:
                self.run_pass(stages, ingest=ingest)
            except Exception:  # a bug must not end the schedule; it is logged whole
                log.exception("job_crashed", stages=list(stages))

        return job

    def start(
        self,
        *,
        initial_pass: bool = True,
        on_pass: Callable[[list[StageOutcome]], None] | None = None,
    ) -> None:
        """Start the schedules; with ``initial_pass``, run everything once right away."""
        schedules = self._settings.schedules
        if self._source is not None:
            self._add("ingest", schedules.ingest, self._ingest_job)
        for name in STAGES:
            self._add(name, getattr(schedules, name), self._job([name], ingest=False))
        self._add("dead_letter_replay", schedules.dead_letter_replay, self.replay_dead_letters)
        if initial_pass:

            def first() -> None:
                outcomes = self.run_pass()
                if on_pass is not None and not self.stop_event.is_set():
                    on_pass(outcomes)

            self._scheduler.add_job(first, id="initial_pass", next_run_time=datetime.now(UTC))
        self._scheduler.start()
        log.info("orchestrator_started", jobs=[job.id for job in self._scheduler.get_jobs()])

    def _add(self, job_id: str, schedule: str, func: Callable[[], None]) -> None:
        self._scheduler.add_job(
            func,
            _trigger(schedule),
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def _ingest_job(self) -> None:
        if self.stop_event.is_set():
            return
        with self._lock:
            self._ingest_outcome()

    def stop(self) -> None:
        """Ask the job in flight to stop at its next batch boundary and wait for it."""
        self.stop_event.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        log.info("orchestrator_stopped")
