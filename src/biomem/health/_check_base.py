"""What every health check shares: :class:`BaseCheck` (timing, budget, result) and helpers.

The checks themselves, and the rules they follow, are described in
:mod:`biomem.health.checks`; import these names from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from biomem.health.model import Check, ComponentHealth, Measurement, Status
from biomem.resilience.breaker import BreakerState, CircuitBreaker
from biomem.resilience.redact import redact_value

__all__ = ["REFUSING_STATES", "BaseCheck", "WallClock", "error_text"]

T = TypeVar("T")
WallClock = Callable[[], datetime]

# A breaker in these refuses calls: report it, do not call through it.
REFUSING_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)


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
