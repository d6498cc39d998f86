"""The health checks against a real App: DuckDB file, fake Ollama, real PostgreSQL."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.checks import build_checks
from biomem.health.model import ComponentHealth, HealthSnapshot, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.resources import CpuWindow, stage_lateness
from biomem.resilience.errors import DatabaseUnavailable
from tests.fakes.ollama import FakeOllama
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.integration

# Thresholds no test machine reaches, so the overall status depends only on the
# component under test (a busy CI host must not turn "warn" into "fail").
RELAXED = """
[thresholds]
memory_degraded_percent = 99.9
memory_critical_percent = 100
disk_degraded_percent = 99.9
disk_critical_percent = 100
cpu_degraded_percent = 99.9
cpu_critical_percent = 100
"""


@pytest.fixture
def apps() -> Iterator[list[App]]:
    """Apps opened by a test, closed at its end whatever happened."""
    opened: list[App] = []
    yield opened
    for app in opened:
        app.close()


def open_health_app(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apps: list[App],
    *,
    config: str = RELAXED,
    **env: str,
) -> App:
    config_file = tmp_path / "biomem.toml"
    config_file.write_text(config, encoding="utf-8")
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(config_file))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = open_app(load_settings())
    apps.append(app)
    return app


async def check_all(app: App) -> HealthSnapshot:
    return await HealthMonitor(build_checks(app)).run_once()


def component(snapshot: HealthSnapshot, name: str) -> ComponentHealth:
    found = snapshot.component(name)
    assert found is not None, f"no component {name}"
    return found


def measurement(health: ComponentHealth, name: str) -> Any:
    for item in health.measurements:
        if item.name == name:
            return item
    raise AssertionError(f"{health.name} has no measurement {name}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def insert_run(
    app: App, stage: str, finished: datetime, *, status: str = "succeeded", **counts: int
) -> None:
    app.store.execute(
        "INSERT INTO runs (stage, started_at, finished_at, status, counts)"
        " VALUES (?, ?, ?, ?, ?::JSON)",
        [stage, finished - timedelta(seconds=5), finished, status, json.dumps(counts)],
    )


# ---------------------------------------------------------------------------- ollama


async def test_ollama_up_is_healthy(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """With the fake Ollama serving both configured models, ollama and duckdb are healthy."""
    app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake_ollama.url)
    snapshot = await check_all(app)
    ollama = component(snapshot, "ollama")
    assert ollama.status is Status.HEALTHY, ollama.output
    assert measurement(ollama, "modelsPresent").value is True
    assert measurement(ollama, "responseTime").value > 0
    assert ollama.details["breaker"]["state"] == "closed"
    assert fake_ollama.request_count("/api/tags") == 1
    duckdb = component(snapshot, "duckdb")
    assert duckdb.status is Status.HEALTHY, duckdb.output
    assert duckdb.details["lock_held"] is True
    assert duckdb.details["max_concurrent_calls"] == 1
    assert duckdb.details["call_timeout_s"] is None  # off by default
    assert measurement(duckdb, "fileSize").value > 0
    assert measurement(duckdb, "diskFree").value > 0
    json.dumps([dict(c.details) for c in snapshot.components.values()])  # JSON-serialisable


async def test_ollama_stopped_is_unhealthy_and_overall_warns(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Ollama down is UNHEALTHY, yet the whole only warns: its fallback carries the work."""
    app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake_ollama.url)
    fake_ollama.stop()
    snapshot = await check_all(app)
    ollama = component(snapshot, "ollama")
    assert ollama.status is Status.UNHEALTHY
    assert ollama.output is not None and "unreachable" in ollama.output
    assert "fallback" in ollama.output
    assert snapshot.status is Status.DEGRADED and snapshot.status.wire == "warn"


async def test_hung_ollama_times_out_while_the_others_report(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """A hanging Ollama costs the pass at most its check's timeout; every other check reports."""
    app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake_ollama.url)
    fake_ollama.hang()
    checks = build_checks(app)
    timeout_s = next(c.timeout_s for c in checks if c.name == "ollama")
    started = time.monotonic()
    snapshot = await HealthMonitor(checks).run_once()
    elapsed = time.monotonic() - started
    assert elapsed < timeout_s + 1, elapsed
    ollama = component(snapshot, "ollama")
    assert ollama.status is Status.UNHEALTHY
    assert ollama.output is not None and "timed out" in ollama.output
    assert component(snapshot, "duckdb").status is Status.HEALTHY
    # The machine's own CPU (a busy CI box) may make it degraded, never worse, and never
    # unknown for lack of time: the hung Ollama took nothing from the other checks.
    assert component(snapshot, "system_resources").status in (Status.HEALTHY, Status.DEGRADED)
    assert component(snapshot, "pipeline").status is Status.HEALTHY
    assert component(snapshot, "postgresql").status is Status.UNKNOWN
    assert snapshot.status.wire == "warn"


async def test_missing_model_degrades_ollama(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Ollama without the embedding model is DEGRADED and names the missing model."""
    with FakeOllama(models=("llama3.2:latest",)) as fake:
        app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake.url)
        ollama = component(await check_all(app), "ollama")
    assert ollama.status is Status.DEGRADED
    assert measurement(ollama, "modelsPresent").value is False
    assert ollama.details["missing_models"] == ["nomic-embed-text"]


async def test_open_ollama_breaker_is_reported_without_a_call(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """With its breaker open, ollama is UNHEALTHY and the check sends Ollama nothing."""
    app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake_ollama.url)
    app.guards.ollama.breaker.transition_to_open()
    snapshot = await check_all(app)
    ollama = component(snapshot, "ollama")
    assert ollama.status is Status.UNHEALTHY
    assert ollama.output is not None and "breaker open" in ollama.output
    assert fake_ollama.request_count("/api/tags") == 0
    pipeline = component(snapshot, "pipeline")
    assert [b["name"] for b in pipeline.details["open_breakers"]] == ["ollama"]
    assert measurement(pipeline, "openBreakers").value == 1


async def test_fallback_share_counts_the_last_hour(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """fallbackShare is the fallback share of the last hour's short_term and long_term items."""
    app = open_health_app(monkeypatch, tmp_path, apps, OLLAMA_URL=fake_ollama.url)
    now = datetime.now(UTC)
    insert_run(app, "short_term", now - timedelta(minutes=10), fallback=3, llm=1)
    insert_run(app, "long_term", now - timedelta(minutes=5), fallback=0, llm=4)
    insert_run(app, "short_term", now - timedelta(hours=2), fallback=100, llm=0)  # too old
    insert_run(app, "consolidation", now, fallback=50, llm=0)  # not an LLM stage
    share = measurement(component(await check_all(app), "ollama"), "fallbackShare")
    assert share.value == pytest.approx(3 / 8)
    assert share.unit == "ratio"


# ---------------------------------------------------------------------------- postgresql


async def test_postgres_unset_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Without POSTGRES_DB_URL, postgresql is UNKNOWN and says it is not configured."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    postgres = component(await check_all(app), "postgresql")
    assert postgres.status is Status.UNKNOWN
    assert postgres.output == "not configured (POSTGRES_DB_URL unset)"


async def test_postgres_up_is_healthy(
    pg_clean_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """A reachable PostgreSQL is HEALTHY with a response time, pool stats and a closed breaker."""
    app = open_health_app(monkeypatch, tmp_path, apps, POSTGRES_DB_URL=pg_clean_url)
    snapshot = await check_all(app)
    postgres = component(snapshot, "postgresql")
    assert postgres.status is Status.HEALTHY, postgres.output
    response = measurement(postgres, "responseTime")
    assert response.unit == "ms" and response.value > 0
    assert postgres.details["breaker"]["state"] == "closed"
    assert "pool_size" in postgres.details["pool"]
    assert "ingest" in component(snapshot, "pipeline").details["stages"]


async def test_postgres_stopped_is_unhealthy_and_overall_warns(
    pg_cluster: PgCluster,
    fake_ollama: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apps: list[App],
) -> None:
    """A stopped PostgreSQL is UNHEALTHY within the check's timeout, and the whole only warns."""
    app = open_health_app(
        monkeypatch,
        tmp_path,
        apps,
        POSTGRES_DB_URL=pg_cluster.url(),
        OLLAMA_URL=fake_ollama.url,
    )
    pg_cluster.stop()
    started = time.monotonic()
    snapshot = await check_all(app)
    assert time.monotonic() - started < 4
    postgres = component(snapshot, "postgresql")
    assert postgres.status is Status.UNHEALTHY
    assert postgres.output is not None and "ingest and writeback wait" in postgres.output
    assert component(snapshot, "duckdb").status is Status.HEALTHY
    assert snapshot.status is Status.DEGRADED and snapshot.status.wire == "warn"


async def test_open_postgres_breaker_is_reported_without_a_call(
    pg_clean_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """With its breaker open, postgresql is UNHEALTHY and no connection is taken."""
    app = open_health_app(monkeypatch, tmp_path, apps, POSTGRES_DB_URL=pg_clean_url)
    assert app.postgres is not None
    # Opening the app took one (the shared dead-letter table); the check must take none.
    before = app.postgres.get_stats().get("connections_num", 0)
    app.guards.postgresql.breaker.transition_to_open()
    postgres = component(await check_all(app), "postgresql")
    assert postgres.status is Status.UNHEALTHY
    assert postgres.output is not None and "breaker open" in postgres.output
    assert postgres.details["pool"].get("connections_num", 0) == before


async def test_half_open_breaker_with_its_trials_taken_is_still_unhealthy(
    pg_clean_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Half-open with every trial slot held by other callers, postgresql is still reported
    unhealthy: nothing has got through yet (degraded here made an outage look like
    unhealthy / degraded / unhealthy, and recovery's 3-in-a-row never fired)."""
    from biomem.resilience._breaker_model import BreakerState

    app = open_health_app(monkeypatch, tmp_path, apps, POSTGRES_DB_URL=pg_clean_url)
    breaker = app.guards.postgresql.breaker
    breaker._transition(BreakerState.HALF_OPEN)
    release = threading.Event()
    held: list[threading.Thread] = []
    for _ in range(breaker.config.permitted_calls_in_half_open):
        thread = threading.Thread(target=breaker.call, args=(release.wait,), daemon=True)
        thread.start()
        held.append(thread)
    try:
        deadline = time.monotonic() + 10
        while breaker._trials_admitted < len(held):  # the trials are in
            assert time.monotonic() < deadline, "the trial calls never started"
            time.sleep(0.01)
        postgres = component(await check_all(app), "postgresql")
    finally:
        release.set()
        for thread in held:
            thread.join(5)
    assert breaker.state is BreakerState.HALF_OPEN or breaker.state is BreakerState.CLOSED
    assert postgres.status is Status.UNHEALTHY
    assert postgres.output is not None and "half-open" in postgres.output


async def test_no_secret_in_any_component(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """The PostgreSQL password appears nowhere in the snapshot, even when the connection fails."""
    planted = "Planted-s3cret-Pw"
    url = f"postgresql://biomem:{planted}@127.0.0.1:{closed_port()}/biomem"
    app = open_health_app(
        monkeypatch, tmp_path, apps, POSTGRES_DB_URL=url, OLLAMA_URL=fake_ollama.url
    )
    snapshot = await check_all(app)
    assert component(snapshot, "postgresql").status is Status.UNHEALTHY
    assert planted not in repr(snapshot)
    assert url not in repr(snapshot)


# ---------------------------------------------------------------------------- duckdb


async def test_closed_store_is_critical_and_fails_the_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """A closed store is CRITICAL; duckdb is required, so the whole fails."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    app.store.close()
    snapshot = await check_all(app)
    duckdb = component(snapshot, "duckdb")
    assert duckdb.status is Status.CRITICAL
    assert duckdb.details["lock_held"] is False
    assert snapshot.status is Status.CRITICAL and snapshot.status.wire == "fail"
    # The checks that read the store say they cannot, rather than failing.
    assert component(snapshot, "pipeline").status is Status.UNKNOWN


async def test_store_file_gone_is_critical(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """A store file deleted under the process is CRITICAL."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    app.store.path.unlink()
    duckdb = component(await check_all(app), "duckdb")
    assert duckdb.status is Status.CRITICAL
    assert duckdb.output is not None and "unreadable" in duckdb.output


async def test_store_held_by_a_long_transaction_is_busy_not_broken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """While a stage's transaction holds the store, duckdb is DEGRADED (busy), never failed."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with app.store.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        snapshot = await check_all(app)
    finally:
        release.set()
        holder.join(10)
    duckdb = component(snapshot, "duckdb")
    assert duckdb.status is Status.DEGRADED
    assert duckdb.output is not None and "busy" in duckdb.output
    assert component(snapshot, "pipeline").status is Status.UNKNOWN
    assert snapshot.status.wire == "warn"


async def test_duckdb_reports_its_bulkhead_and_call_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """The duckdb details show the one-call bulkhead and the configured deadline, which the
    store opened by the app enforces."""
    config = RELAXED + "\n[resilience.duckdb]\ncall_timeout_seconds = 2.5\n"
    app = open_health_app(monkeypatch, tmp_path, apps, config=config)
    assert app.store.call_timeout_s == 2.5
    duckdb = component(await check_all(app), "duckdb")
    assert duckdb.status is Status.HEALTHY, duckdb.output
    assert duckdb.details["max_concurrent_calls"] == 1
    assert duckdb.details["call_timeout_s"] == 2.5
    assert duckdb.details["calls_timed_out"] == 0


# ---------------------------------------------------------------------------- resources


async def test_memory_over_critical_threshold_is_critical(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Memory use over the configured critical threshold makes system_resources CRITICAL."""
    config = "[thresholds]\nmemory_degraded_percent = 1\nmemory_critical_percent = 2\n"
    app = open_health_app(monkeypatch, tmp_path, apps, config=config)
    snapshot = await check_all(app)
    system = component(snapshot, "system_resources")
    assert system.status is Status.CRITICAL
    memory = measurement(system, "memoryUtilization")
    assert memory.status is Status.CRITICAL and memory.unit == "percent"
    assert system.output is not None and "memory" in system.output
    assert snapshot.status.wire == "fail"
    names = {m.name for m in system.measurements}
    assert names == {
        "memoryUtilization",
        "diskUtilization",
        "cpuUtilization",
        "loadAverage",
        "openFileDescriptors",
    }


CpuTimes = namedtuple("CpuTimes", "user system idle")


def test_cpu_is_averaged_over_the_window() -> None:
    """CPU utilisation is the busy share since the sample a window ago, not one instant."""
    now = [0.0]
    times = [CpuTimes(0.0, 0.0, 0.0)]
    window = CpuWindow(10.0, cpu_times=lambda: times[0], clock=lambda: now[0], sleep=lambda s: None)
    # Ten seconds at 20 % busy, then one second at 100 %: a spike, not a sustained load.
    now[0], times[0] = 10.0, CpuTimes(2.0, 0.0, 8.0)
    assert window.utilization()[0] == pytest.approx(20.0)
    now[0], times[0] = 11.0, CpuTimes(3.0, 0.0, 8.0)
    percent, span = window.utilization()
    assert span == pytest.approx(11.0) and percent == pytest.approx(300 / 11)
    # Sustained: twenty more seconds all busy.
    now[0], times[0] = 31.0, CpuTimes(23.0, 0.0, 8.0)
    percent, _span = window.utilization()
    assert percent == pytest.approx(100.0)


# ---------------------------------------------------------------------------- pipeline


async def test_fresh_pipeline_is_healthy_with_unknown_stages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Stages that never ran are unknown, which does not degrade the pipeline."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    pipeline = component(await check_all(app), "pipeline")
    assert pipeline.status is Status.HEALTHY
    stages = pipeline.details["stages"]
    assert "ingest" not in stages  # PostgreSQL is not configured
    assert {entry["status"] for entry in stages.values()} == {"unknown"}
    assert measurement(pipeline, "lateStages").value == 0
    assert measurement(pipeline, "deadLetters").value == 0
    assert measurement(pipeline, "oldestDeadLetterAge").value is None


async def test_late_stage_degrades_the_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """A short_term stage whose last success is two days old is late: the pipeline is DEGRADED."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    insert_run(app, "short_term", datetime.now(UTC) - timedelta(days=2))
    insert_run(app, "working_memory", datetime.now(UTC) - timedelta(seconds=30))
    pipeline = component(await check_all(app), "pipeline")
    assert pipeline.status is Status.DEGRADED
    assert pipeline.output is not None and "stage short_term late" in pipeline.output
    assert pipeline.details["stages"]["short_term"]["status"] == "late"
    assert pipeline.details["stages"]["working_memory"]["status"] == "ok"
    assert measurement(pipeline, "lateStages").value == 1


async def test_dead_letters_degrade_the_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apps: list[App]
) -> None:
    """Pending letters are counted and aged; a letter that gave up (DEAD) degrades the pipeline."""
    app = open_health_app(monkeypatch, tmp_path, apps)
    failure = DatabaseUnavailable("postgresql", "down")
    for key in ("a", "b"):
        app.dlq.put("writeback", {"n": 1}, failure, idempotency_key=key, component="postgresql")
    pipeline = component(await check_all(app), "pipeline")
    assert pipeline.status is Status.HEALTHY
    assert measurement(pipeline, "deadLetters").value == 2
    assert measurement(pipeline, "oldestDeadLetterAge").value >= 0
    app.store.execute("UPDATE dead_letters SET status = 'dead' WHERE idempotency_key = 'a'")
    pipeline = component(await check_all(app), "pipeline")
    assert pipeline.status is Status.DEGRADED
    assert measurement(pipeline, "deadLetters").value == 1
    assert pipeline.details["dead_letters"]["dead"] == 1


@pytest.mark.parametrize(
    ("schedule", "reference", "now", "late"),
    [
        pytest.param("5m", "2026-11-30T07:48", "2026-11-30T08:00", True, id="interval-late"),
        pytest.param("5m", "2026-11-30T07:51", "2026-11-30T08:00", False, id="interval-in-time"),
        pytest.param("0 3 * * *", "2026-11-29T03:05", "2026-11-30T08:00", False, id="daily-ok"),
        pytest.param("0 3 * * *", "2026-11-28T03:05", "2026-11-30T08:00", True, id="daily-late"),
        pytest.param(
            "0 3 * * *", "2026-11-28T03:05", "2026-11-30T03:00:30", False, id="daily-grace"
        ),
    ],
)
def test_stage_lateness(schedule: str, reference: str, now: str, late: bool) -> None:
    """A stage is late once two scheduled runs have passed without a success (plus a grace)."""
    at = datetime.fromisoformat(reference).replace(tzinfo=UTC)
    clock = datetime.fromisoformat(now).replace(tzinfo=UTC)
    assert stage_lateness(schedule, at, clock)[0] is late


async def test_saturated_cpu_degrades_but_never_fails(tmp_path: Path) -> None:
    """CPU sustained over its critical threshold degrades system_resources, never fails it."""
    from biomem.config.filecfg import ThresholdSettings
    from biomem.health.resources import SystemResourcesCheck

    now = [0.0]
    times = [CpuTimes(0.0, 0.0, 0.0)]
    window = CpuWindow(10.0, cpu_times=lambda: times[0], clock=lambda: now[0], sleep=lambda s: None)
    window.utilization()
    now[0], times[0] = 20.0, CpuTimes(20.0, 0.0, 0.0)  # twenty seconds fully busy
    thresholds = ThresholdSettings(
        memory_degraded_percent=99.9,
        memory_critical_percent=100,
        disk_degraded_percent=99.9,
        disk_critical_percent=100,
        cpu_degraded_percent=80,
        cpu_critical_percent=95,
    )
    result = await SystemResourcesCheck(tmp_path, thresholds, cpu=window).run()
    cpu = next(m for m in result.measurements if m.name == "cpuUtilization")
    assert cpu.value == pytest.approx(100.0)
    assert cpu.status is Status.DEGRADED and "busy, not failing" in (cpu.output or "")
    assert result.status is not Status.CRITICAL
