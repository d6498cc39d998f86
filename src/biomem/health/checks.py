"""The health checks of biomem's components, and :func:`build_checks` for an :class:`App`.

Every check runs its blocking work in a thread (``asyncio.to_thread``), times
itself, and never raises for a dependency's failure: a :class:`BiomemError`
becomes a status and a redacted output. Each also keeps a budget a little
under its ``timeout_s``, so a slow dependency is reported by the check itself
(with its details: breaker, pool, last error) rather than by the monitor's
bare "check timed out". A thread left behind by a missed budget ends on the
client's own timeouts.

Checks go through the same policies as the pipeline: their calls count in
the breakers, and an OPEN breaker is reported, never called through.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from biomem.clients.ollama import OllamaModels
from biomem.health.model import Check, ComponentHealth, Measurement, Status
from biomem.resilience.breaker import BreakerState, CircuitBreaker
from biomem.resilience.errors import BiomemError, CircuitOpenError
from biomem.resilience.redact import mask_url, redact_value

if TYPE_CHECKING:
    from biomem.app import App

__all__ = [
    "REFUSING_STATES",
    "BaseCheck",
    "DuckDBCheck",
    "OllamaCheck",
    "PostgresCheck",
    "build_checks",
    "error_text",
]

T = TypeVar("T")
WallClock = Callable[[], datetime]

SLOW_RESPONSE_MS = 1000.0  # a round trip slower than this degrades a datastore
# A breaker in these refuses calls: report it, do not call through it.
REFUSING_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_FALLBACK_STAGES = ("short_term", "long_term")


def _refusing(breaker: Any) -> bool:
    """True while the breaker would refuse the probe.

    Once an open breaker's wait is over, the probe goes through and becomes its
    half-open trial: without it nothing might ever call again, and a recovered
    dependency would stay reported down.
    """
    state = breaker.state
    if state is BreakerState.FORCED_OPEN:
        return True
    return bool(state is BreakerState.OPEN and breaker.retry_after() > 0)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _clean(text: str) -> str:
    """One error-derived text, redacted."""
    return str(redact_value("output", text))


def error_text(exc: BaseException) -> str:
    """An error's message, redacted, for a check's output."""
    return _clean(str(exc) or type(exc).__name__)


def _breaker_details(breaker: CircuitBreaker) -> dict[str, Any]:
    metrics = asdict(breaker.metrics())
    metrics["state"] = breaker.state.value
    metrics["retry_after_s"] = round(breaker.retry_after(), 3)
    return metrics


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class BaseCheck(Check):
    """Timing, budget and the result record shared by the checks."""

    def __init__(self, *, timeout_s: float | None = None, wall_clock: WallClock = _utc_now) -> None:
        if timeout_s is not None:
            self.timeout_s = timeout_s
        self._wall_clock = wall_clock

    @property
    def budget_s(self) -> float:
        """How long the check waits for its dependency: under the monitor's timeout."""
        return max(self.timeout_s * 0.75, self.timeout_s - 0.5)

    async def _in_thread(self, fn: Callable[[], T], budget_s: float | None = None) -> T:
        """Run ``fn`` in a thread; TimeoutError after the budget (the thread finishes alone)."""
        return await asyncio.wait_for(
            asyncio.to_thread(fn), self.budget_s if budget_s is None else budget_s
        )

    def _result(
        self,
        status: Status,
        started: float,
        *,
        output: str | None = None,
        measurements: Iterable[Measurement] = (),
        details: Mapping[str, Any] | None = None,
    ) -> ComponentHealth:
        return ComponentHealth(
            name=self.name,
            component_type=self.component_type,
            status=status,
            required=self.required,
            checked_at=self._wall_clock(),
            duration_ms=(time.perf_counter() - started) * 1000,
            output=None if output is None else _clean(output),
            measurements=tuple(measurements),
            details=redact_value("details", dict(details or {})),
        )


class PostgresCheck(BaseCheck):
    """PostgreSQL (optional): a ``SELECT 1`` round trip, the pool and the breaker."""

    name = "postgresql"
    component_type = "datastore"
    required = False
    timeout_s = 3.0

    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        client = self.app.postgres
        if client is None:
            return self._result(
                Status.UNKNOWN, started, output="not configured (POSTGRES_DB_URL unset)"
            )
        breaker = self.app.guards.postgresql.breaker
        details: dict[str, Any] = {"pool": client.get_stats(), "breaker": _breaker_details(breaker)}
        if _refusing(breaker):
            return self._result(
                Status.UNHEALTHY,
                started,
                output=f"postgresql breaker {breaker.state.value} (next trial in "
                f"{breaker.retry_after():.0f} s): ingest and writeback wait",
                details=details,
            )

        def select_one() -> None:
            client.run(
                lambda conn: conn.execute("SELECT 1").fetchone(), operation="health", retry=False
            )

        call_started = time.perf_counter()
        try:
            await self._in_thread(select_one)
        except CircuitOpenError:
            # Opened meanwhile, or half-open with every trial slot taken by others.
            half_open = breaker.state is BreakerState.HALF_OPEN
            details["breaker"] = _breaker_details(breaker)
            return self._result(
                Status.DEGRADED if half_open else Status.UNHEALTHY,
                started,
                output="breaker half-open: trial calls in progress"
                if half_open
                else "postgresql breaker open: ingest and writeback wait",
                details=details,
            )
        except (BiomemError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                why = f"no answer within {self.budget_s:g} s"
                if client.last_connect_error:
                    why += f" (last connection attempt: {client.last_connect_error})"
            else:
                why = error_text(exc)
            details["pool"] = client.get_stats()
            details["breaker"] = _breaker_details(breaker)
            return self._result(
                Status.UNHEALTHY,
                started,
                output=f"postgresql unavailable: {why}; ingest and writeback wait",
                details=details,
            )
        response_ms = _ms(call_started)
        details["pool"] = client.get_stats()
        details["breaker"] = _breaker_details(breaker)
        status, output = Status.HEALTHY, None
        slow = response_ms > SLOW_RESPONSE_MS
        if slow:
            status, output = Status.DEGRADED, f"slow: SELECT 1 took {response_ms:.0f} ms"
        if breaker.state is BreakerState.HALF_OPEN:
            status, output = Status.DEGRADED, "breaker half-open: trial calls in progress"
        response = Measurement(
            name="responseTime",
            value=response_ms,
            unit="ms",
            status=Status.DEGRADED if slow else Status.HEALTHY,
        )
        return self._result(
            status, started, output=output, measurements=[response], details=details
        )


class DuckDBCheck(BaseCheck):
    """The embedded store (required): a query, the file, free disk and the write lock."""

    name = "duckdb"
    component_type = "datastore"
    required = True
    timeout_s = 2.0

    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def _file_facts(self) -> tuple[int | None, int | None, str | None]:
        """(file + WAL bytes, free bytes, problem) without touching the connection."""
        path = self.app.store.path
        free: int | None
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        try:
            size = path.stat().st_size
        except OSError as exc:
            return None, free, f"store file {path} unreadable ({exc.strerror or exc})"
        if not os.access(path, os.R_OK):
            return size, free, f"store file {path} unreadable (permission denied)"
        wal = path.with_name(path.name + ".wal")
        try:
            size += wal.stat().st_size
        except FileNotFoundError:
            pass  # no pending WAL: checkpointed
        except OSError as exc:
            return size, free, f"store WAL {wal} unreadable ({exc.strerror or exc})"
        return size, free, None

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        store = self.app.store
        details: dict[str, Any] = {"lock_held": not store.closed, "path": str(store.path)}
        try:
            size, free, problem = await self._in_thread(self._file_facts, self.budget_s / 2)
        except TimeoutError:
            size, free, problem = None, None, None  # a stuck filesystem shows in the query too
        measurements = [
            Measurement(name="fileSize", value=size, unit="bytes"),
            Measurement(name="diskFree", value=free, unit="bytes"),
        ]
        if store.closed:
            return self._result(
                Status.CRITICAL,
                started,
                output="store closed: the pipeline is paused",
                measurements=measurements,
                details=details,
            )
        if problem is not None:
            return self._result(
                Status.CRITICAL, started, output=problem, measurements=measurements, details=details
            )
        call_started = time.perf_counter()
        try:
            row = await self._in_thread(
                lambda: store.fetchone("SELECT count(*) FROM memories"),
                max(0.1, self.budget_s - (time.perf_counter() - started)),
            )
        except TimeoutError:
            # The store answers one statement at a time: a long stage transaction
            # holds it. Busy, not broken; a recovery that reconnects would hurt.
            return self._result(
                Status.DEGRADED,
                started,
                output=f"store busy: no answer within {self.budget_s:g} s",
                measurements=measurements,
                details=details,
            )
        except BiomemError as exc:
            return self._result(
                Status.UNHEALTHY,
                started,
                output=f"store query failed: {error_text(exc)}",
                measurements=measurements,
                details=details,
            )
        measurements.insert(0, Measurement(name="responseTime", value=_ms(call_started), unit="ms"))
        details["memories"] = int(row[0]) if row else 0
        details["breaker"] = _breaker_details(self.app.guards.duckdb.breaker)
        return self._result(Status.HEALTHY, started, measurements=measurements, details=details)


_SHARE_SQL = (
    "SELECT coalesce(sum(TRY_CAST(counts->>'fallback' AS BIGINT)), 0),"
    " coalesce(sum(TRY_CAST(counts->>'llm' AS BIGINT)), 0)"
    " FROM runs WHERE stage IN (?, ?) AND finished_at >= ?"
)


class OllamaCheck(BaseCheck):
    """Ollama (optional): ``/api/tags``, the configured models, the breaker, the fallback share."""

    name = "ollama"
    component_type = "component"
    required = False
    timeout_s = 3.0

    def __init__(self, app: App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def _fallback_counts(self, since: datetime) -> tuple[int, int]:
        row = self.app.store.fetchone(_SHARE_SQL, [*_FALLBACK_STAGES, since])
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def _share(self, now: datetime) -> Measurement:
        try:
            fallback, llm = await self._in_thread(
                lambda: self._fallback_counts(now - timedelta(hours=1))
            )
        except (BiomemError, TimeoutError) as exc:
            why = "store busy" if isinstance(exc, TimeoutError) else error_text(exc)
            return Measurement(
                name="fallbackShare",
                value=None,
                unit="ratio",
                status=Status.UNKNOWN,
                output=f"runs unreadable: {why}",
            )
        if fallback + llm == 0:
            return Measurement(name="fallbackShare", value=None, unit="ratio")
        share = round(fallback / (fallback + llm), 4)
        return Measurement(
            name="fallbackShare",
            value=share,
            unit="ratio",
            status=Status.DEGRADED if fallback else Status.HEALTHY,
            output=f"{fallback} of {fallback + llm} items in the last hour by fallback heuristics"
            if fallback
            else None,
        )

    async def _probe(self) -> OllamaModels:
        # A transport of our own, in this event loop: an AsyncClient cannot outlive its loop.
        async with httpx.AsyncClient() as http:
            return await self.app.ollama_factory()(http).models(retry=False)

    async def run(self) -> ComponentHealth:
        started = time.perf_counter()
        cfg = self.app.settings.ollama
        breaker = self.app.guards.ollama.breaker
        details: dict[str, Any] = {
            "url": mask_url(cfg.url),
            "chat_model": cfg.model,
            "embedding_model": cfg.embedding_model,
        }
        measurements: list[Measurement] = []
        # A TaskGroup: if the monitor's timeout cancels this run, the query goes too.
        async with asyncio.TaskGroup() as group:
            share = group.create_task(self._share(self._wall_clock()))
            if _refusing(breaker):
                status = Status.UNHEALTHY
                output: str | None = (
                    f"ollama breaker {breaker.state.value} (next trial in "
                    f"{breaker.retry_after():.0f} s): fallback heuristics in use"
                )
            else:
                status, output = await self._reachable(details, measurements)
        measurements.append(share.result())
        details["breaker"] = _breaker_details(breaker)
        return self._result(
            status, started, output=output, measurements=measurements, details=details
        )

    async def _reachable(
        self, details: dict[str, Any], measurements: list[Measurement]
    ) -> tuple[Status, str | None]:
        call_started = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget_s):
                models = await self._probe()
        except TimeoutError:
            return (
                Status.UNHEALTHY,
                f"ollama timed out: no answer to /api/tags within {self.budget_s:g} s;"
                " fallback heuristics in use",
            )
        except CircuitOpenError:
            # Opened meanwhile, or half-open with every trial slot taken by the stages.
            if self.app.guards.ollama.breaker.state is BreakerState.HALF_OPEN:
                return Status.DEGRADED, "ollama breaker half-open: trial calls in progress"
            return Status.UNHEALTHY, "ollama breaker open: fallback heuristics in use"
        except BiomemError as exc:
            return (
                Status.UNHEALTHY,
                f"ollama unreachable: fallback heuristics in use ({error_text(exc)})",
            )
        cfg = self.app.settings.ollama
        missing = [
            name
            for name, present in (
                (cfg.model, models.chat_present),
                (cfg.embedding_model, models.embedding_present),
            )
            if not present
        ]
        details["available_models"] = list(models.available)
        details["missing_models"] = missing
        measurements.append(Measurement(name="responseTime", value=_ms(call_started), unit="ms"))
        measurements.append(
            Measurement(
                name="modelsPresent",
                value=not missing,
                status=Status.DEGRADED if missing else Status.HEALTHY,
                output=f"missing: {', '.join(missing)}" if missing else None,
            )
        )
        if missing:
            return (
                Status.DEGRADED,
                f"ollama reachable but model(s) {', '.join(missing)} missing"
                " (ollama pull them): fallback heuristics in use",
            )
        if self.app.guards.ollama.breaker.state is BreakerState.HALF_OPEN:
            return Status.DEGRADED, "ollama breaker half-open: trial calls in progress"
        return Status.HEALTHY, None


def build_checks(app: App) -> list[Check]:
    """Every check of the process, wired to ``app``; the monitor runs them concurrently."""
    # Here, not at the top: resources builds on this module's BaseCheck.
    from biomem.health.resources import CpuWindow, PipelineCheck, SystemResourcesCheck

    health = app.settings.health
    return [
        DuckDBCheck(app),
        PostgresCheck(app),
        OllamaCheck(app),
        SystemResourcesCheck(
            app.store.path.parent,
            health.thresholds,
            cpu=CpuWindow(health.check_interval_seconds),
        ),
        PipelineCheck(app),
    ]
