"""Scheduling of the stages; for now the one stage that exists, ingest.

Jobs never overlap themselves (``max_instances=1``), missed runs are
coalesced into one, and a failing run is logged and recorded while the
schedule goes on: a background loop never dies.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from biomem.clients.postgres import PostgresClient
from biomem.config import Settings, parse_schedule
from biomem.ingest import IngestCounts, PostgresSource, ingest_postgres
from biomem.logging import get_logger
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
        return IntervalTrigger(seconds=float(value), jitter=min(5.0, float(value) / 10))
    return CronTrigger.from_crontab(str(value), timezone="UTC")


class Orchestrator:
    """Runs the scheduled stages in a background thread until :meth:`stop`."""

    def __init__(
        self, store: DuckDBStore, settings: Settings, postgres: PostgresClient | None
    ) -> None:
        self._store = store
        self._settings = settings
        self._source = (
            PostgresSource(postgres, settings.ingest.postgres) if postgres is not None else None
        )
        self._stop = threading.Event()
        self._scheduler = BackgroundScheduler(timezone="UTC")

    def start(self) -> None:
        if self._source is not None:
            self._scheduler.add_job(
                self._ingest,
                _trigger(self._settings.schedules.ingest),
                id="ingest",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        self._scheduler.start()
        log.info("orchestrator_started", jobs=[job.id for job in self._scheduler.get_jobs()])

    def _ingest(self) -> None:
        assert self._source is not None
        try:
            counts = run_postgres_ingest(self._store, self._source, self._settings, stop=self._stop)
        except BiomemError as exc:
            # Catch, log, continue: the next run resumes from the watermark.
            log.error("ingest_failed", source=self._source.name, error=str(exc))
            return
        except Exception:  # a bug must not end the schedule; it is logged whole
            log.exception("ingest_crashed", source=self._source.name)
            return
        log.info("ingest_done", source=self._source.name, **counts.as_dict())

    def stop(self) -> None:
        """Ask running jobs to stop at their next batch boundary and wait for them."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        log.info("orchestrator_stopped")
