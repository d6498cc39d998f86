"""The PostgreSQL check (optional): a ``SELECT 1`` round trip, the pool and the breaker.

Import it from :mod:`biomem.health.checks`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from biomem.health._check_base import BaseCheck, _breaker_details, _ms, _refusing, error_text
from biomem.health.model import ComponentHealth, Measurement, Status
from biomem.resilience.breaker import BreakerState
from biomem.resilience.errors import BiomemError, CircuitOpenError

if TYPE_CHECKING:
    from biomem.app import App

__all__ = ["SLOW_RESPONSE_MS", "PostgresCheck"]

SLOW_RESPONSE_MS = 1000.0  # a round trip slower than this degrades a datastore


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
            # Opened meanwhile, or half-open with every trial slot taken by others: still
            # down until a trial gets through (reporting it degraded here made the status
            # alternate through an outage, and recovery never saw it in a row).
            half_open = breaker.state is BreakerState.HALF_OPEN
            details["breaker"] = _breaker_details(breaker)
            return self._result(
                Status.UNHEALTHY,
                started,
                output="breaker half-open: trial calls in progress, none through yet;"
                " ingest and writeback wait"
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
