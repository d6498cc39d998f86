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
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from biomem.clients.postgres import PostgresClient
from biomem.config import Settings, parse_schedule
from biomem.ingest import IngestCounts, PostgresSource, ingest_postgres
from biomem.logging import get_logger
from biomem.pipeline.base import OllamaFactory, Progress, StageResult
from biomem.pipeline.runner import STAGES, StageOutcome, run_stages
from biomem.resilience.errors import BiomemError
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
    return CronTrigger.from_crontab(str(value), timezone="UTC")


class Orchestrator:
    """Runs ingest and the stages on their schedules, or once on demand."""

    def __init__(
        self,
        store: DuckDBStore,
        settings: Settings,
        *,
        postgres: PostgresClient | None,
        ollama: OllamaFactory | None,
        stop: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._postgres = postgres
        self._ollama = ollama
        self._source = (
            PostgresSource(postgres, settings.ingest.postgres) if postgres is not None else None
        )
        self.stop_event = stop or threading.Event()
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone="UTC")

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
            return outcomes

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
