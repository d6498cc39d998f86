"""The DuckDB check (required): a query, the file, free disk and the write lock.

Import it from :mod:`biomem.health.checks`.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from biomem.health._check_base import BaseCheck, _breaker_details, _ms, error_text
from biomem.health.model import ComponentHealth, Measurement, Status
from biomem.resilience.errors import BiomemError

if TYPE_CHECKING:
    from biomem.app import App

__all__ = ["DuckDBCheck"]


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
        details: dict[str, Any] = {
            "lock_held": not store.closed,
            "path": str(store.path),
            # The store's bulkhead (one call at a time) and deadline, from the store itself.
            "max_concurrent_calls": store.max_concurrent_calls,
            "call_timeout_s": store.call_timeout_s,
            "calls_timed_out": store.calls_timed_out,
        }
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
