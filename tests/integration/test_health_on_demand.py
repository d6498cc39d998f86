"""HEALTH_CONTINUOUS_MONITORING=false: the endpoints run the checks on request."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.api import create_api
from biomem.health.model import Check, ComponentHealth, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.server import build_health_server
from biomem.metrics import build_registry
from biomem.resilience.clock import FakeClock
from tests.integration.test_health_api import HangingCheck, StaticCheck, standard_checks

pytestmark = pytest.mark.integration

# Generous: reached only when the code under test is broken, never waited for.
DEADLINE_S = 10.0


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    with socket.socket() as probe:  # a port free a moment ago, for build_health_server
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HEALTH_HTTP_PORT", str(probe.getsockname()[1]))
    opened = open_app(load_settings())
    try:
        yield opened
    finally:
        opened.close()


def on_demand(checks: list[Check], clock: FakeClock, interval_s: float = 15.0) -> HealthMonitor:
    return HealthMonitor(checks, interval_s=interval_s, on_demand=True, clock=clock.monotonic)


class HeldCheck(Check):
    """A check that holds its run until ``expected`` callers wait for it, then reports healthy."""

    name = "duckdb"
    required = True
    timeout_s = DEADLINE_S

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.monitor: HealthMonitor | None = None
        self.entries = 0

    async def run(self) -> ComponentHealth:
        self.entries += 1
        assert self.monitor is not None
        runs = self.monitor.on_demand_runs
        assert runs is not None
        deadline = time.monotonic() + DEADLINE_S
        # Polled: the run has its own loop and thread; no event reaches it from the waiters.
        while runs.waiting < self.expected:
            assert time.monotonic() < deadline, f"only {runs.waiting} callers waited"
            await asyncio.sleep(0.01)
        return ComponentHealth(
            name=self.name,
            component_type="datastore",
            status=Status.HEALTHY,
            required=True,
            checked_at=datetime.now(UTC),
            duration_ms=1.0,
        )


class GatedCheck(Check):
    """A check whose run waits for ``gate`` (set by the test)."""

    name = "ollama"
    timeout_s = DEADLINE_S

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entries = 0

    async def run(self) -> ComponentHealth:
        self.entries += 1
        await asyncio.to_thread(self.gate.wait, DEADLINE_S)
        return ComponentHealth(
            name=self.name,
            component_type="component",
            status=Status.HEALTHY,
            required=False,
            checked_at=datetime.now(UTC),
            duration_ms=1.0,
        )


def test_checks_run_on_request_and_are_reused_within_the_interval(app: App) -> None:
    """Nothing runs until asked; a result is reused for the interval, max-age counting down."""
    clock = FakeClock()
    checks = standard_checks()
    duckdb = next(c for c in checks if c.name == "duckdb")
    assert isinstance(duckdb, StaticCheck)
    monitor = on_demand(checks, clock)
    runs = monitor.on_demand_runs
    assert runs is not None
    registry = build_registry(app, monitor, process_metrics=False)
    with TestClient(create_api(monitor=monitor, app=app, registry=registry)) as client:
        assert runs.runs == 0
        first = client.get("/health")
        assert first.status_code == 200
        assert first.json()["status"] == "warn"  # ollama in fallback
        assert first.headers["cache-control"] == "max-age=15"
        assert runs.runs == 1

        duckdb.status, duckdb.output = Status.CRITICAL, "store file unreadable"
        clock.advance(10.0)
        reused = client.get("/health")
        assert reused.status_code == 200
        assert reused.content == first.content
        assert reused.headers["cache-control"] == "max-age=5"  # what is left of the result's
        assert client.get("/health/duckdb").json()["status"] == "healthy"
        assert client.get("/health/detailed").json()["components"]["duckdb"]["wire"] == "pass"
        assert client.get("/metrics").status_code == 200
        assert registry.get_sample_value("biomem_health_status", {"component": "duckdb"}) == 0
        assert runs.runs == 1  # every endpoint shared the one result

        clock.advance(5.0)
        failing = client.get("/health")
        assert failing.status_code == 503
        assert failing.json()["status"] == "fail"
        assert failing.headers["cache-control"] == "max-age=15"
        assert runs.runs == 2
        assert registry.get_sample_value("biomem_health_status", {"component": "duckdb"}) == 3

        clock.advance(15.0)
        assert client.get("/metrics").status_code == 200  # a scrape checks a stale result too
        assert runs.runs == 3
        clock.advance(15.0)
        assert client.get("/status/data").status_code == 200
        assert runs.runs == 4


def test_concurrent_requests_share_one_run(app: App) -> None:
    """Requests arriving while the checks run wait for that run: one pass, never a stampede."""
    clock = FakeClock()
    held = HeldCheck(expected=8)
    monitor = on_demand([held, StaticCheck("ollama")], clock)
    held.monitor = monitor
    runs = monitor.on_demand_runs
    assert runs is not None

    async def burst(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE_S) as client:
            # The cached /health path awaits on the event loop; /health/detailed waits
            # on a worker thread: both join the same run.
            paths = ["/health"] * 6 + ["/health/detailed"] * 2
            return list(await asyncio.gather(*(client.get(p) for p in paths)))

    with build_health_server(app, monitor) as server:
        answers = asyncio.run(burst(server.url))
        assert [a.status_code for a in answers] == [200] * 8
        assert held.entries == 1
        assert runs.runs == 1
        assert len({a.content for a in answers[:6]}) == 1  # one result for all
        later = httpx.get(f"{server.url}/health", timeout=DEADLINE_S)
        assert later.status_code == 200
        assert held.entries == 1  # within the interval: reused, no run
    assert runs.waiting == 0


async def test_a_cancelled_request_leaves_the_shared_run_alone() -> None:
    """A waiter that goes away cancels neither the run nor the other waiters' answer."""
    clock = FakeClock()
    gated = GatedCheck()
    monitor = on_demand([gated], clock)
    runs = monitor.on_demand_runs
    assert runs is not None
    leaving = asyncio.create_task(monitor.fresh_snapshot_async())
    staying = asyncio.create_task(monitor.fresh_snapshot_async())
    deadline = time.monotonic() + DEADLINE_S
    while runs.waiting < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    gated.gate.set()
    snapshot = await staying
    ollama = snapshot.component("ollama")
    assert ollama is not None and ollama.status is Status.HEALTHY
    assert (gated.entries, runs.runs) == (1, 1)
    monitor.stop()


def test_a_hung_dependency_delays_a_request_by_its_check_timeout_only(app: App) -> None:
    """On demand a hanging check still ends at its timeout: the answer says so, the rest report."""
    clock = FakeClock()
    hanging = HangingCheck("postgresql", timeout_s=0.3)
    hanging.required = False
    monitor = on_demand([hanging, StaticCheck("duckdb", required=True)], clock)
    registry = build_registry(app, monitor, process_metrics=False)
    with TestClient(create_api(monitor=monitor, app=app, registry=registry)) as client:
        body = client.get("/health/detailed").json()
    assert body["status"] == "warn"
    postgres = body["components"]["postgresql"]
    assert postgres["status"] == "unhealthy"
    assert "timed out" in postgres["output"]
    assert body["components"]["duckdb"]["status"] == "healthy"


def test_an_on_demand_monitor_has_no_background_loop() -> None:
    """start() is refused: with monitoring off, only requests run the checks."""
    monitor = on_demand([], FakeClock())
    with pytest.raises(RuntimeError, match="on-demand"):
        monitor.start()
    assert HealthMonitor([]).max_age_s() == 15
    assert monitor.max_age_s() == 0  # nothing checked yet: nothing to cache
