"""Live signals: breakers' open time, resource readings per monitor result, dead-letter depth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from biomem.app import App
from biomem.health.model import Check, ComponentHealth, Measurement, Status
from biomem.health.monitor import HealthMonitor
from biomem.recovery import LiveSignals, ProcessRegistry, own_temp_dir
from biomem.resilience.clock import FakeClock
from tests.support.recovery import make_app

H, D, C = Status.HEALTHY, Status.DEGRADED, Status.CRITICAL


class Resources(Check):
    """A real check reporting the memory status the test sets."""

    name = "system_resources"
    required = True

    def __init__(self) -> None:
        self.memory = H

    async def run(self) -> ComponentHealth:
        return ComponentHealth(
            name=self.name,
            component_type="system",
            status=self.memory,
            required=True,
            checked_at=datetime.now(UTC),
            duration_ms=0.1,
            measurements=(
                Measurement(name="memoryUtilization", value=50.0, status=self.memory),
                Measurement(name="diskUtilization", value=None, status=Status.UNKNOWN),
            ),
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[App]:
    application = make_app(monkeypatch, clock)
    try:
        yield application
    finally:
        application.close()


def _signals(app: App, monitor: HealthMonitor, clock: FakeClock) -> LiveSignals:
    processes = ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock)
    return LiveSignals(app, monitor, orchestrator=None, processes=processes, clock=clock)


def test_breaker_open_time_counts_from_the_opening_until_it_closes(
    app: App, clock: FakeClock
) -> None:
    """OPEN → HALF_OPEN → OPEN is one outage; closing ends it."""
    signals = _signals(app, HealthMonitor([]), clock)
    breaker = app.guards.postgresql.breaker
    breaker.transition_to_open()
    clock.advance(100)
    breaker.transition_to_closed()
    breaker.transition_to_open()
    clock.advance(200)
    assert signals.observe(clock.monotonic()).breakers_open_s == {"postgresql": 200.0}
    breaker.transition_to_closed()
    assert signals.observe(clock.monotonic()).breakers_open_s == {}


def test_a_breaker_open_before_recovery_started_counts_from_the_start(
    app: App, clock: FakeClock
) -> None:
    """Already open when observed first: counted from then, the earliest known."""
    app.guards.ollama.breaker.transition_to_forced_open()
    clock.advance(50)
    signals = _signals(app, HealthMonitor([]), clock)
    clock.advance(30)
    assert signals.observe(clock.monotonic()).breakers_open_s == {"ollama": 30.0}


def test_resource_readings_count_monitor_results_not_evaluations(
    app: App, clock: FakeClock
) -> None:
    """Observing twice without a new check adds no reading; unknown readings are left out."""
    check = Resources()
    monitor = HealthMonitor([check])
    signals = _signals(app, monitor, clock)
    check.memory = C
    asyncio.run(monitor.run_once())
    signals.observe(clock.monotonic())
    first = signals.observe(clock.monotonic())
    assert first.resources["memory"] == (C,) and first.resources["disk"] == ()
    check.memory = D
    asyncio.run(monitor.run_once())
    assert signals.observe(clock.monotonic()).resources["memory"] == (C, D)
    assert first.history["system_resources"] == (C,)


def test_dead_letter_depth_is_the_pending_count(app: App, clock: FakeClock) -> None:
    """Pending letters are counted; the statuses come from the snapshot."""
    signals = _signals(app, HealthMonitor([]), clock)
    for n in range(3):
        app.dlq.put("writeback", {}, OSError("x"), idempotency_key=f"k{n}", component="postgresql")
    assert signals.observe(clock.monotonic()).dead_letters == 3


def test_an_on_demand_result_past_its_interval_is_not_acted_on(app: App, clock: FakeClock) -> None:
    """Checked on request: recovery sees statuses and readings until the result is stale."""
    check = Resources()
    monitor = HealthMonitor([check], interval_s=15, on_demand=True, clock=clock.monotonic)
    signals = _signals(app, monitor, clock)
    check.memory = C
    monitor.fresh_snapshot()  # a request ran the checks
    fresh = signals.observe(clock.monotonic())
    assert fresh.statuses == {"system_resources": C}
    assert fresh.history["system_resources"] == (C,)
    assert fresh.resources["memory"] == (C,)
    clock.advance(16)  # nobody asked since: an old reading, not a current one
    stale = signals.observe(clock.monotonic())
    assert (stale.statuses, stale.history, stale.resources) == ({}, {}, {})
    monitor.fresh_snapshot()
    assert signals.observe(clock.monotonic()).resources["memory"] == (C, C)
