"""The Prometheus collector over a real store, breakers, DLQ, monitor, retries and alerts."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from biomem.alerting import AlertService
from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.api import create_api
from biomem.health.model import Check, ComponentHealth, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.server import HealthServer
from biomem.metrics import BiomemCollector, BoundedReader, build_registry
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import (
    CircuitOpenError,
    DependencyError,
    LLMUnavailable,
    RetryExhaustedError,
)
from biomem.store.runs import RunStatus, record_run
from tests.support.alert_rig import WebhookServer

pytestmark = pytest.mark.integration


class FixedCheck(Check):
    """A real check that always reports one status."""

    def __init__(self, name: str, status: Status) -> None:
        self.name = name
        self.status = status

    async def run(self) -> ComponentHealth:
        return ComponentHealth(
            name=self.name,
            component_type="component",
            status=self.status,
            required=False,
            checked_at=datetime.now(UTC),
            duration_ms=0.1,
        )


@pytest.fixture
def app() -> Iterator[App]:
    opened = open_app(load_settings())
    try:
        yield opened
    finally:
        opened.close()


def registry_for(app: App, *checks: Check) -> tuple[CollectorRegistry, HealthMonitor]:
    monitor = HealthMonitor(checks)
    if checks:
        asyncio.run(monitor.run_once())
    return build_registry(app, monitor, process_metrics=False), monitor


def test_breaker_families(app: App) -> None:
    """State, window calls, refused calls and rates come from each breaker at scrape time."""
    registry, _ = registry_for(app)
    breaker = app.guards.ollama.breaker

    def refused() -> None:
        raise ConnectionError("refused")

    for _ in range(2):
        breaker.call(lambda: "ok")
    with pytest.raises(ConnectionError):
        breaker.call(refused)
    sample = registry.get_sample_value
    assert sample("biomem_breaker_state", {"breaker": "ollama", "state": "closed"}) == 1
    assert sample("biomem_breaker_state", {"breaker": "ollama", "state": "open"}) == 0
    assert sample("biomem_breaker_window_calls", {"breaker": "ollama", "outcome": "success"}) == 2
    assert sample("biomem_breaker_window_calls", {"breaker": "ollama", "outcome": "failure"}) == 1
    assert sample("biomem_breaker_failure_rate", {"breaker": "ollama"}) == -1  # below minimum

    breaker.transition_to_forced_open()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    assert sample("biomem_breaker_state", {"breaker": "ollama", "state": "forced_open"}) == 1
    assert sample("biomem_breaker_state", {"breaker": "ollama", "state": "closed"}) == 0
    assert sample("biomem_breaker_not_permitted_calls_total", {"breaker": "ollama"}) == 1
    assert sample("biomem_breaker_state", {"breaker": "postgresql", "state": "closed"}) == 1


def test_breaker_calls_total_counts_every_outcome_and_never_goes_down(app: App) -> None:
    """Calls by outcome are counters: they survive the window closing afresh after an outage."""
    registry, _ = registry_for(app)
    breaker = app.guards.ollama.breaker

    def calls(outcome: str) -> float | None:
        return registry.get_sample_value(
            "biomem_breaker_calls_total", {"breaker": "ollama", "outcome": outcome}
        )

    def refused() -> None:
        raise ConnectionError("refused")

    def cancelled() -> None:
        raise asyncio.CancelledError

    outcomes = ("success", "failure", "slow", "ignored", "not_permitted")
    assert {o: calls(o) for o in outcomes} == dict.fromkeys(outcomes, 0)
    for _ in range(3):
        breaker.call(lambda: "ok")
    with pytest.raises(ConnectionError):
        breaker.call(refused)
    with pytest.raises(asyncio.CancelledError):
        breaker.call(cancelled)  # never finished: ignored
    breaker.transition_to_open()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    breaker.transition_to_closed()  # a fresh window: the window gauges drop to 0
    breaker.call(lambda: "ok")
    window = {"breaker": "ollama", "outcome": "success"}
    assert registry.get_sample_value("biomem_breaker_window_calls", window) == 1
    assert {o: calls(o) for o in outcomes} == {
        "success": 4,
        "failure": 1,
        "slow": 0,
        "ignored": 1,
        "not_permitted": 1,
    }
    assert (
        registry.get_sample_value(
            "biomem_breaker_calls_total", {"breaker": "postgresql", "outcome": "success"}
        )
        == 0
    )


def test_retry_budget_error_events_and_dead_letters(app: App) -> None:
    """Budgets per dependency, error events by (component, kind), dead letters by status."""
    registry, _ = registry_for(app)
    sample = registry.get_sample_value
    for dependency in ("postgresql", "duckdb", "ollama"):
        budget = getattr(app.guards, dependency).budget
        assert sample("biomem_retry_budget_available", {"dependency": dependency}) == (
            pytest.approx(budget.available(), abs=1.0)
        )
    errors = app.guards.errors
    errors.record(TimeoutError("slow"), component="ollama", operation="chat")
    errors.record(TimeoutError("slow"), component="ollama", operation="chat")
    errors.record(ConnectionRefusedError("no"), component="postgresql", operation="connect")
    assert sample("biomem_error_events_total", {"component": "ollama", "kind": "timeout"}) == 2
    assert (
        sample(
            "biomem_error_events_total", {"component": "postgresql", "kind": "connection_failure"}
        )
        == 1
    )
    assert sample("biomem_dead_letters", {"status": "pending"}) == 0
    assert sample("biomem_dead_letter_oldest_pending_age_seconds") == 0
    app.dlq.put(
        "writeback.dream",
        {"dream": 1},
        ConnectionRefusedError("no"),
        idempotency_key="dream-1",
        component="postgresql",
    )
    assert sample("biomem_dead_letters", {"status": "pending"}) == 1
    assert sample("biomem_dead_letters", {"status": "dead"}) == 0
    age = sample("biomem_dead_letter_oldest_pending_age_seconds")
    assert age is not None
    assert 0 <= age < 60


def test_stage_families_fold_new_and_finished_runs(app: App) -> None:
    """Runs by status, items by source and the last duration; later scrapes add only new rows."""
    registry, _ = registry_for(app)
    sample = registry.get_sample_value
    with record_run(app.store, "short_term") as run:
        run.counts = {"items": 5, "llm": 3, "fallback": 2, "deferred": 0}
    with pytest.raises(RuntimeError), record_run(app.store, "short_term"):
        raise RuntimeError("boom")
    with record_run(app.store, "ingest") as run:
        run.counts = {"source": "samples.jsonl", "ingested": 4}
    # A run still going (or killed outright): not counted until it ends.
    running = app.store.fetchone(
        "INSERT INTO runs (stage, started_at, status) VALUES ('long_term', now(), 'running')"
        " RETURNING id"
    )
    assert running is not None

    def runs(stage: str, status: str) -> float | None:
        return sample("biomem_stage_runs_total", {"stage": stage, "status": status})

    def items(stage: str, source: str) -> float | None:
        return sample("biomem_stage_items_total", {"stage": stage, "source": source})

    assert runs("short_term", "succeeded") == 1
    assert runs("short_term", "failed") == 1
    assert runs("ingest", "succeeded") == 1
    assert runs("long_term", "running") is None
    assert items("short_term", "llm") == 3
    assert items("short_term", "fallback") == 2
    assert items("ingest", "llm") == 0
    duration = sample("biomem_stage_last_run_duration_seconds", {"stage": "short_term"})
    assert duration is not None
    assert 0 <= duration < 60

    # The running run ends with a long duration, and a new one arrives.
    app.store.execute(
        "UPDATE runs SET status = 'succeeded', started_at = now() - INTERVAL 90 SECOND,"
        ' finished_at = now(), counts = \'{"llm": 7, "fallback": 0}\' WHERE id = ?',
        [running[0]],
    )
    with record_run(app.store, "short_term") as run:
        run.counts = {"items": 1, "llm": 0, "fallback": 1}
        run.status = RunStatus.DEFERRED
    assert runs("long_term", "succeeded") == 1
    assert items("long_term", "llm") == 7
    long_term = sample("biomem_stage_last_run_duration_seconds", {"stage": "long_term"})
    assert long_term == pytest.approx(90, abs=1)
    assert runs("short_term", "deferred") == 1
    assert runs("short_term", "succeeded") == 1  # not counted twice
    assert items("short_term", "fallback") == 3
    assert items("short_term", "llm") == 3


def test_stage_run_durations_are_a_histogram_fed_by_ended_runs(app: App) -> None:
    """Each ended run lands once in its stage's bucket; running rows wait until they end."""
    registry, _ = registry_for(app)
    sample = registry.get_sample_value

    def insert(stage: str, seconds: float | None, status: str = "succeeded") -> int:
        row = app.store.fetchone(
            "INSERT INTO runs (stage, started_at, finished_at, status)"
            " VALUES (?, now() - to_microseconds(?::BIGINT), CASE WHEN ? THEN now() END, ?)"
            " RETURNING id",
            [stage, int((seconds or 0) * 1e6), seconds is not None, status],
        )
        assert row is not None
        return int(row[0])

    def bucket(stage: str, le: str) -> float | None:
        return sample("biomem_stage_run_duration_seconds_bucket", {"stage": stage, "le": le})

    insert("ingest", 0.005)
    insert("ingest", 0.2, status="failed")
    insert("ingest", 7200.0)  # past the last bound: only +Inf
    running = insert("long_term", None, status="running")
    assert bucket("ingest", "0.01") == 1
    assert bucket("ingest", "0.25") == 2
    assert bucket("ingest", "3600.0") == 2
    assert bucket("ingest", "+Inf") == 3
    assert sample("biomem_stage_run_duration_seconds_count", {"stage": "ingest"}) == 3
    total = sample("biomem_stage_run_duration_seconds_sum", {"stage": "ingest"})
    assert total == pytest.approx(7200.205, abs=0.01)
    assert bucket("long_term", "+Inf") is None

    app.store.execute(
        "UPDATE runs SET status = 'succeeded', started_at = now() - INTERVAL 90 SECOND,"
        " finished_at = now() WHERE id = ?",
        [running],
    )
    insert("ingest", 0.02)
    assert bucket("long_term", "60.0") == 0
    assert bucket("long_term", "120.0") == 1
    assert bucket("ingest", "0.025") == 2  # the new run, and the earlier ones not twice
    assert sample("biomem_stage_run_duration_seconds_count", {"stage": "ingest"}) == 4


@pytest.mark.parametrize(
    ("status", "value", "up", "overall"),
    [
        pytest.param(Status.HEALTHY, 0, 1, 0, id="healthy"),
        pytest.param(Status.DEGRADED, 1, 1, 1, id="degraded"),
        pytest.param(Status.UNHEALTHY, 2, 0, 1, id="unhealthy"),
        pytest.param(Status.CRITICAL, 3, 0, 1, id="critical"),
        pytest.param(Status.UNKNOWN, -1, 0, -1, id="unknown"),
    ],
)
def test_health_families(app: App, status: Status, value: int, up: int, overall: int) -> None:
    """Each component's status as a number and whether it is up; an optional one only degrades."""
    registry, _ = registry_for(app, FixedCheck("ollama", status))
    sample = registry.get_sample_value
    assert sample("biomem_health_status", {"component": "ollama"}) == value
    assert sample("biomem_health_up", {"component": "ollama"}) == up
    assert sample("biomem_health_status", {"component": "overall"}) == overall


def test_a_failing_source_costs_its_family_not_the_scrape(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """With the store closed, the store families are skipped (and logged); the rest are served."""
    registry, _ = registry_for(app, FixedCheck("duckdb", Status.HEALTHY))
    app.store.close()
    with caplog.at_level(logging.ERROR, logger="biomem.metrics"):
        text = generate_latest(registry).decode()
    assert "biomem_breaker_state" in text
    assert "biomem_health_status" in text
    assert "biomem_stage_runs_total" not in text
    assert "biomem_dead_letters" not in text
    assert "metrics family stages skipped" in caplog.text
    assert "metrics family dead_letters skipped" in caplog.text


def test_a_busy_store_is_waited_for_only_briefly(app: App) -> None:
    """A store held by a long transaction delays a scrape by at most the reader's timeout."""
    monitor = HealthMonitor([])
    registry = CollectorRegistry()
    registry.register(BiomemCollector(app, monitor, reader=BoundedReader(timeout_s=0.3)))
    release = threading.Event()
    holding = threading.Event()

    def hold_the_store() -> None:
        with app.store.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_store, daemon=True)
    holder.start()
    assert holding.wait(5)
    try:
        started = time.perf_counter()
        text = generate_latest(registry).decode()
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        holder.join(10)
    assert elapsed < 2.0
    assert "biomem_breaker_state" in text
    assert "biomem_stage_runs_total" not in text


def test_bounded_reader_refuses_to_pile_up_threads() -> None:
    """Reads over the in-flight limit are refused at once; results and errors pass through."""
    reader = BoundedReader(timeout_s=0.2, max_pending=1)
    assert reader.call(lambda: 42) == 42
    with pytest.raises(KeyError):
        reader.call(lambda: {}["missing"])
    gate = threading.Event()
    with pytest.raises(TimeoutError, match="within"):
        reader.call(lambda: gate.wait(10))
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="still waiting"):
        reader.call(lambda: 1)
    assert time.perf_counter() - started < 0.1
    gate.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert reader.call(lambda: 7) == 7
            break
        except TimeoutError:
            time.sleep(0.01)
    else:
        pytest.fail("the reader never recovered its slot")


def test_metrics_endpoint_serves_the_families(app: App) -> None:
    """GET /metrics returns the Prometheus text of the registry, every family present."""
    registry, monitor = registry_for(app, FixedCheck("duckdb", Status.HEALTHY))
    with record_run(app.store, "dreams") as run:
        run.counts = {"items": 1, "llm": 1, "fallback": 0}
    app.guards.errors.record(TimeoutError("slow"), component="ollama", operation="chat")
    api = create_api(monitor=monitor, app=app, registry=registry)
    with TestClient(api) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for family in (
        "biomem_breaker_state",
        "biomem_breaker_calls_total",
        "biomem_breaker_window_calls",
        "biomem_breaker_not_permitted_calls_total",
        "biomem_breaker_failure_rate",
        "biomem_retry_budget_available",
        "biomem_dead_letters",
        "biomem_dead_letter_oldest_pending_age_seconds",
        "biomem_stage_runs_total",
        "biomem_stage_last_run_duration_seconds",
        "biomem_stage_run_duration_seconds_bucket",
        "biomem_stage_run_duration_seconds_sum",
        "biomem_stage_items_total",
        "biomem_health_status",
        "biomem_health_up",
        "biomem_error_events_total",
    ):
        assert f"\n{family}" in response.text, family
    assert 'biomem_stage_items_total{source="llm",stage="dreams"} 1.0' in response.text
    assert 'biomem_stage_run_duration_seconds_bucket{le="+Inf",stage="dreams"} 1.0' in (
        response.text
    )
    assert "# TYPE biomem_stage_run_duration_seconds histogram" in response.text


def test_build_registry_adds_process_metrics(app: App) -> None:
    """The default registry also carries the process, platform and GC collectors."""
    registry = build_registry(app, HealthMonitor([]))
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    text = generate_latest(registry).decode()
    assert "\npython_info{" in text
    assert "\npython_gc_collections_total{" in text
    assert "\nbiomem_breaker_state{" in text


# --------------------------------------------------------------------------- over real HTTP


def scrape(api: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics from a real uvicorn server on loopback; samples by (name, labels)."""
    with HealthServer(api, host="127.0.0.1", port=0) as server:
        response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_retries_and_budget_exhaustion_are_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each retry and each retry the budget refused shows in /metrics, per dependency."""
    config = tmp_path / "biomem.toml"
    # A breaker that never judges, so retries stop only at attempts or the budget.
    config.write_text(
        "[resilience.ollama]\nwindow_size = 10000\nminimum_calls = 10000\nmax_attempts = 3\n"
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(config))
    app = open_app(load_settings(), clock=FakeClock())  # backoff sleeps advance a fake clock
    try:
        attempts = 0

        def down() -> None:
            nonlocal attempts
            attempts += 1
            raise LLMUnavailable("ollama", "connection refused")

        calls, refused = 60, 0
        for _ in range(calls):
            with pytest.raises(DependencyError) as caught:
                app.guards.ollama.call(down)
            # The budget gives up with the original error; the last attempt with RetryExhausted.
            refused += not isinstance(caught.value, RetryExhaustedError)
        assert 0 < refused < calls
        monitor = HealthMonitor([])
        samples = scrape(
            create_api(
                monitor=monitor,
                app=app,
                registry=build_registry(app, monitor, process_metrics=False),
            )
        )
    finally:
        app.close()
    assert samples[("biomem_retries_total", (("dependency", "ollama"),))] == attempts - calls
    assert samples[("biomem_retry_budget_exhausted_total", (("dependency", "ollama"),))] == refused
    assert samples[("biomem_retries_total", (("dependency", "postgresql"),))] == 0
    assert samples[("biomem_retry_budget_exhausted_total", (("dependency", "duckdb"),))] == 0


def test_alert_metrics_firing_sent_failed_and_pending(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Alerts firing by severity, delivery attempts by receiver and result, pending ones."""
    ok, refusing = WebhookServer(), WebhookServer()
    ok.start()
    refusing.start()
    refusing.code = 400
    try:
        config = tmp_path / "biomem.toml"
        config.write_text(
            "[[alerts.receivers]]\n"
            f'name = "refusing"\nurl = "{refusing.url}"\n\n'
            "[[alerts.receivers]]\n"
            'name = "down"\nurl = "http://127.0.0.1:9/hook"\ntimeout_seconds = 2\n'
        )
        monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(config))
        monkeypatch.setenv("HEALTH_ALERT_WEBHOOK_URL", ok.url)
        clock = FakeClock()
        app = open_app(load_settings(), clock=clock)
        try:
            monitor = HealthMonitor([])
            service = AlertService(app, monitor)
            service.manager.fire({"alertname": "A", "component": "duckdb", "severity": "critical"})
            service.manager.fire({"alertname": "B", "component": "ollama", "severity": "warning"})
            service.manager.fire({"alertname": "C", "component": "pg", "severity": "warning"})
            service.manager.silence(
                {"component": "pg"}, ends_at=datetime.now(UTC) + timedelta(hours=1)
            )
            clock.advance(10)  # group_wait
            service.step()  # enqueue one per receiver, deliver
            api = create_api(
                monitor=monitor,
                app=app,
                registry=build_registry(app, monitor, process_metrics=False, alerts=service),
            )
            samples = scrape(api)
            service.stop()
        finally:
            app.close()
    finally:
        ok.stop()
        refusing.stop()

    def notifications(receiver: str, result: str) -> float:
        labels = (("receiver", receiver), ("result", result))
        return samples[("biomem_alert_notifications_total", labels)]

    firing = {
        severity: samples[("biomem_alerts_firing", (("severity", severity),))]
        for severity in ("info", "warning", "error", "critical")
    }
    assert firing == {"info": 0, "warning": 1, "error": 0, "critical": 1}
    assert (notifications("default", "sent"), notifications("default", "failed")) == (1, 0)
    assert (notifications("refusing", "sent"), notifications("refusing", "failed")) == (0, 1)
    assert (notifications("down", "sent"), notifications("down", "failed")) == (0, 1)
    assert samples[("biomem_alert_notifications_pending", ())] == 1  # "down" waits
    assert len(ok.requests) == 1
