"""Health model and monitor: aggregation by criticality, timeouts, transitions, history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from biomem.health.model import Check, ComponentHealth, Status, StatusTransition, aggregate
from biomem.health.monitor import HealthMonitor

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def result(name: str, status: Status, *, required: bool) -> ComponentHealth:
    return ComponentHealth(
        name=name,
        component_type="component",
        status=status,
        required=required,
        checked_at=NOW,
        duration_ms=1.0,
    )


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        pytest.param([], Status.UNKNOWN, id="nothing-known"),
        pytest.param([("duckdb", Status.HEALTHY, True)], Status.HEALTHY, id="pass"),
        pytest.param(
            [("duckdb", Status.HEALTHY, True), ("ollama", Status.UNHEALTHY, False)],
            Status.DEGRADED,
            id="optional-down-degrades",
        ),
        pytest.param(
            [("duckdb", Status.CRITICAL, True), ("ollama", Status.HEALTHY, False)],
            Status.CRITICAL,
            id="required-down-fails",
        ),
        pytest.param(
            [("duckdb", Status.HEALTHY, True), ("postgresql", Status.UNKNOWN, False)],
            Status.HEALTHY,
            id="not-configured-is-neutral",
        ),
    ],
)
def test_aggregate_by_criticality(
    components: list[tuple[str, Status, bool]], expected: Status
) -> None:
    """The overall status is the worst, with optional components capped at degraded."""
    got = aggregate(result(n, s, required=r) for n, s, r in components)
    assert got is expected


def test_wire_words() -> None:
    """Statuses map to pass/warn/fail on the wire."""
    assert [s.wire for s in Status] == ["pass", "warn", "fail", "fail", "warn"]


class Fixed(Check):
    """A check whose answer the test sets."""

    def __init__(self, name: str, status: Status, *, required: bool = False) -> None:
        self.name = name
        self.status = status
        self.required = required
        self.timeout_s = 0.2

    async def run(self) -> ComponentHealth:
        return result(self.name, self.status, required=self.required)


class Hanging(Check):
    name = "ollama"
    timeout_s = 0.1

    async def run(self) -> ComponentHealth:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Broken(Check):
    name = "pipeline"

    async def run(self) -> ComponentHealth:
        raise RuntimeError("bug in a check")


async def test_monitor_survives_hanging_and_broken_checks() -> None:
    """A hanging check times out (unhealthy), a broken one is unknown; the rest report."""
    monitor = HealthMonitor([Fixed("duckdb", Status.HEALTHY, required=True), Hanging(), Broken()])
    assert monitor.snapshot().status is Status.UNKNOWN  # before any run
    snapshot = await monitor.run_once()
    assert snapshot.components["duckdb"].status is Status.HEALTHY
    assert snapshot.components["ollama"].status is Status.UNHEALTHY
    assert "timed out" in (snapshot.components["ollama"].output or "")
    assert snapshot.components["pipeline"].status is Status.UNKNOWN
    assert snapshot.status is Status.DEGRADED


async def test_transitions_are_published_and_history_bounded() -> None:
    """A status change is published once per component and for the whole; history is bounded."""
    seen: list[StatusTransition] = []
    check = Fixed("ollama", Status.HEALTHY)
    monitor = HealthMonitor(
        [Fixed("duckdb", Status.HEALTHY, required=True), check],
        history_size=3,
        listeners=[seen.append],
    )
    await monitor.run_once()
    check.status = Status.UNHEALTHY
    await monitor.run_once()
    await monitor.run_once()
    changed = [(t.component, t.previous, t.current) for t in seen]
    assert ("ollama", Status.HEALTHY, Status.UNHEALTHY) in changed
    assert ("overall", Status.HEALTHY, Status.DEGRADED) in changed
    assert changed.count(("ollama", Status.HEALTHY, Status.UNHEALTHY)) == 1
    for _ in range(5):
        await monitor.run_once()
    assert len(monitor.history("ollama")) == 3
