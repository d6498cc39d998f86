"""Scheduling of ingest and the stages, and one-off passes over them.

The stages that use DuckDB alone run under one pipeline lock, for the whole
stage run, so they never interleave and each reads what the stages before it
committed. Work that waits on PostgreSQL never holds that lock while it
waits (DESIGN.md: PostgreSQL away pauses ingest and writeback, nothing else):

* ingest fetches a batch holding only the ingest lock and takes the pipeline
  lock to commit the batch with its watermark (one DuckDB transaction);
* writeback reads its snapshot under the pipeline lock and sends it holding
  only the writeback lock, so writebacks never overtake one another;
* dead letters are written, and replayed, outside the pipeline lock.

Locks are taken in one order: replay, then ingest or writeback, then the
pipeline lock, never the reverse. Jobs never overlap themselves
(``max_instances=1``), missed runs are coalesced into one, and a failing run
is logged and recorded while the schedule goes on: a background loop never
dies. On stop, the job in flight returns at its next batch boundary (LLM
calls in flight are cancelled, nothing half-written commits).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from biomem.app import App
from biomem.config import Settings, parse_schedule
from biomem.config.filecfg import cron_trigger
from biomem.ingest import IngestCounts, PostgresSource, ingest_postgres
from biomem.logging import get_logger
from biomem.pipeline.base import Progress, StageResult
from biomem.pipeline.runner import (
    POSTGRES_STAGES,
    STAGES,
    StageOutcome,
    resolve_stages,
    run_stages,
)
from biomem.resilience.deadletter import ReplayReport
from biomem.resilience.errors import BiomemError, DatabaseUnavailable
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus, record_run

__all__ = ["ActiveRun", "Orchestrator", "RunInfo", "run_postgres_ingest"]

log = get_logger(__name__)


def run_postgres_ingest(
    store: DuckDBStore,
    source: PostgresSource,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    commit_lock: AbstractContextManager[object] | None = None,
) -> IngestCounts:
    """One ingest pass from PostgreSQL, recorded in the runs table.

    ``commit_lock`` is held around each batch's commit (see :func:`ingest_postgres`).
    """
    event = stop or threading.Event()
    with record_run(store, "ingest") as run:
        counts = ingest_postgres(
            store,
            source,
            settings=settings.ingest,
            should_stop=event.is_set,
            commit_lock=commit_lock,
        )
        run.counts = {"source": source.name, **counts.as_dict()}
        if event.is_set():
            run.status = RunStatus.INTERRUPTED
    return counts


class _LinkedStop(threading.Event):
    """Set for one pass (its cancel) or for all (the orchestrator's stop).

    Stages only ask ``is_set()`` between batches; cancelling one pass must not
    stop the process, and stopping the process must stop every pass.
    """

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()


@dataclass(slots=True)
class ActiveRun:
    """A pass in progress: which stage runs now, since when (clock seconds)."""

    pass_id: int
    job: str
    stages: tuple[str, ...]
    cancel: _LinkedStop
    stage: str | None = None
    stage_started: float = 0.0
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What recovery sees of a pass in progress."""

    pass_id: int
    job: str
    stage: str
    running_s: float
    cancelled: bool


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
        self._clock = app.guards.clock
        # The pipeline: runs of the DuckDB-only stages, ingest's commits, writeback's
        # snapshot. Nothing that waits on PostgreSQL is done holding it.
        self._lock = threading.RLock()
        # One ingest at a time (the watermark read at its start stays the latest),
        # one writeback at a time (a later snapshot is never overwritten by an
        # earlier one), one replay of the dead letters at a time.
        self._ingest_lock = threading.Lock()
        self._writeback_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        # Passes in progress (an ingest or a writeback may run beside a stage),
        # for recovery to find and cancel a stuck one.
        self._active: dict[int, ActiveRun] = {}
        self._active_lock = threading.Lock()
        self._pass_ids = itertools.count(1)
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
        job: str | None = None,
    ) -> list[StageOutcome]:
        """Ingest (when PostgreSQL is configured) then run the stages in dependency order.

        The same order as ever, one step after the other; only the locks differ:
        the DuckDB-only stages run under the pipeline lock, ingest and the
        PostgreSQL stages outside it (see the module's docstring).
        ``job`` names the scheduled job the pass belongs to (recovery reschedules it).
        """
        names = resolve_stages(stages)
        local = [name for name in names if name not in POSTGRES_STAGES]
        remote = [name for name in names if name in POSTGRES_STAGES]
        with self._tracked(job or "pass", stages) as active:

            def started(name: str) -> Progress | None:
                active.stage, active.stage_started = name, self._clock.monotonic()
                return progress_for(name)

            outcomes: list[StageOutcome] = []
            if ingest and self._source is not None and not active.cancel.is_set():
                started("ingest")
                with self._ingest_lock:
                    outcomes.append(self._ingest_outcome(active.cancel))
            moment = as_of or datetime.now(UTC)
            if local:  # an empty list would mean every stage to run_stages
                with self._lock:
                    outcomes += run_stages(
                        self._store,
                        self._settings,
                        local,
                        as_of=moment,
                        ollama=self._ollama,
                        stop=active.cancel,
                        postgres=self._postgres,
                        progress_for=started,
                    )
            if remote:
                with self._writeback_lock:
                    sent = run_stages(
                        self._store,
                        self._settings,
                        remote,
                        as_of=moment,
                        ollama=self._ollama,
                        stop=active.cancel,
                        postgres=self._postgres,
                        progress_for=started,
                        pipeline_lock=self._lock,
                        earlier=outcomes,
                    )
                outcomes += sent
                for outcome in sent:
                    if outcome.stage == "writeback" and outcome.status == RunStatus.DEFERRED:
                        reason = str(
                            outcome.result.detail.get("postgres_unavailable", "unavailable")
                        )
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
        with self._ingest_lock:
            run_postgres_ingest(
                self._store,
                self._source,
                self._settings,
                stop=self.stop_event,
                commit_lock=self._lock,
            )

    def _replay_writeback(self, payload: dict[str, Any]) -> None:
        with self._writeback_lock:
            outcome = run_stages(
                self._store,
                self._settings,
                ["writeback"],
                as_of=datetime.now(UTC),
                ollama=None,
                stop=self.stop_event,
                postgres=self._postgres,
                pipeline_lock=self._lock,
            )[0]
        if outcome.status != RunStatus.SUCCEEDED:
            detail = outcome.error or str(outcome.result.detail.get("postgres_unavailable"))
            raise DatabaseUnavailable("postgresql", f"writeback still deferred: {detail}")

    def replay_dead_letters(self, *, wait_s: float = -1) -> ReplayReport | None:
        """Replay due dead letters whose dependency is healthy (the scheduled job).

        Not under the pipeline lock: the letters are mostly PostgreSQL's work,
        which takes the locks it needs (ingest's, writeback's) itself.
        None when stopping, or when another replay went on longer than ``wait_s``.
        """
        if self.stop_event.is_set() or not self._replay_lock.acquire(timeout=wait_s):
            return None
        try:
            report = self._app.dlq.replay_due(is_healthy=self._app.is_healthy)
        finally:
            self._replay_lock.release()
        if report.selected:
            log.info(
                "dead_letters_replayed",
                recovered=len(report.recovered),
                failed=len(report.failed),
                dead=len(report.dead),
                skipped=len(report.skipped),
            )
        return report

    def _replay_job(self) -> None:
        """The scheduled replay: a failing store (a full disk, its breaker open) is logged,
        not raised into the scheduler; the letters wait and the next run tries again."""
        try:
            self.replay_dead_letters()
        except BiomemError as exc:
            log.error("dead_letter_replay_failed", error=str(exc))

    def _ingest_outcome(self, stop: threading.Event) -> StageOutcome:
        """One ingest run; the caller holds the ingest lock."""
        assert self._source is not None
        started = time.perf_counter()
        try:
            counts = run_postgres_ingest(
                self._store, self._source, self._settings, stop=stop, commit_lock=self._lock
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
                self.run_pass(stages, ingest=ingest, job=stages[0] if len(stages) == 1 else None)
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
        self._add("dead_letter_replay", schedules.dead_letter_replay, self._replay_job)
        if initial_pass:

            def first() -> None:
                outcomes = self.run_pass(job="initial_pass")
                if on_pass is not None and not self.stop_event.is_set():
                    on_pass(outcomes)

            self._scheduler.add_job(first, id="initial_pass", next_run_time=datetime.now(UTC))
        self._scheduler.start()
        log.info("orchestrator_started", jobs=[job.id for job in self._scheduler.get_jobs()])

    def _add(self, job_id: str, schedule: str, func: Callable[[], object]) -> None:
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
        # An ingest already under way (a pass's, a replayed one) reads what this one
        # would: skip rather than queue behind it (it may be waiting on PostgreSQL).
        if not self._ingest_lock.acquire(blocking=False):
            log.debug("ingest_skipped", reason="an ingest is already running")
            return
        try:
            with self._tracked("ingest", ("ingest",), stage="ingest") as active:
                self._ingest_outcome(active.cancel)
        finally:
            self._ingest_lock.release()

    def stop(self) -> None:
        """Ask the job in flight to stop at its next batch boundary and wait for it."""
        self.stop_event.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        log.info("orchestrator_stopped")

    # ----------------------------------------------------------------- recovery's hands

    @contextmanager
    def _tracked(
        self, job: str, stages: Sequence[str], stage: str | None = None
    ) -> Iterator[ActiveRun]:
        cancel = _LinkedStop(self.stop_event)
        now = self._clock.monotonic()
        active = ActiveRun(next(self._pass_ids), job, tuple(stages), cancel, stage, now)
        with self._active_lock:
            self._active[active.pass_id] = active
        try:
            yield active
        finally:
            with self._active_lock:
                self._active.pop(active.pass_id, None)
            active.done.set()

    @property
    def running(self) -> bool:
        """True while the schedules run (the daemon), False for one-off passes."""
        return bool(self._scheduler.running)

    def active_runs(self) -> list[RunInfo]:
        """The passes in progress, each with the stage it runs and for how long."""
        now = self._clock.monotonic()
        with self._active_lock:
            return [
                RunInfo(a.pass_id, a.job, a.stage, max(0.0, now - a.stage_started), a.cancelled)
                for a in self._active.values()
                if a.stage is not None
            ]

    def cancel_run(self, pass_id: int) -> RunInfo | None:
        """Ask a pass to stop at its next batch boundary (LLM calls in flight are cancelled)."""
        with self._active_lock:
            active = self._active.get(pass_id)
            if active is None or active.stage is None:
                return None
            active.cancelled = True
            active.cancel.set()
            running_s = max(0.0, self._clock.monotonic() - active.stage_started)
            return RunInfo(active.pass_id, active.job, active.stage, running_s, True)

    def wait_run_ended(self, pass_id: int, timeout_s: float) -> bool:
        """Wait until the pass has ended; True when it has (or was never running)."""
        with self._active_lock:
            active = self._active.get(pass_id)
        return True if active is None else active.done.wait(timeout_s)

    def _stage_job(self, stage: str) -> Any:
        return self._scheduler.get_job(stage) if self._scheduler.running else None

    def reschedule(self, stage: str, delay_s: float) -> datetime | None:
        """Run the stage's job again ``delay_s`` from now; None when it has no running job."""
        job = self._stage_job(stage)
        if job is None or job.next_run_time is None:  # no schedule here, or paused
            return None
        when = datetime.now(UTC) + timedelta(seconds=delay_s)
        job.modify(next_run_time=when)
        return when

    def pause_stage(self, stage: str) -> bool:
        """Stop scheduling the stage (a run in progress finishes); True when it was running."""
        job = self._stage_job(stage)
        if job is None or job.next_run_time is None:
            return False
        job.pause()
        return True

    def resume_stage(self, stage: str) -> bool:
        """Schedule the stage again; True when it was paused."""
        job = self._stage_job(stage)
        if job is None or job.next_run_time is not None:
            return False
        job.resume()
        return True

    def scheduled_stages(self) -> dict[str, bool]:
        """Every scheduled stage's job and whether it is paused (empty without schedules)."""
        if not self._scheduler.running:
            return {}
        return {
            job.id: job.next_run_time is None
            for job in self._scheduler.get_jobs()
            if job.id in STAGES or job.id == "ingest"
        }

    def next_run_times(self) -> dict[str, datetime | None]:
        """Each scheduled stage's next fire time as the scheduler holds it, None while paused.

        Read-only, for the status page: it follows pauses and reschedules by
        recovery. Empty without schedules (one-off passes, before start, after stop).
        """
        if not self._scheduler.running:
            return {}
        return {
            job.id: job.next_run_time
            for job in self._scheduler.get_jobs()
            if job.id in STAGES or job.id == "ingest"
        }
