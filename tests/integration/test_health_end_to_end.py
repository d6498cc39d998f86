"""The health endpoints over the real checks: DuckDB file, fake Ollama, the daemon's server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.api import create_api
from biomem.health.checks import build_checks
from biomem.health.monitor import HealthMonitor
from biomem.health.server import build_health_server
from biomem.metrics import build_registry
from biomem.resilience.clock import FakeClock
from tests.conftest import cli_env
from tests.fakes.ollama import FakeOllama
from tests.integration.test_health_checks import RELAXED

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0  # generous: only a broken build waits this long


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Resource thresholds no test machine reaches: the status depends on the component only."""
    config = tmp_path / "biomem.toml"
    config.write_text(RELAXED, encoding="utf-8")
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(config))
    monkeypatch.setenv("HEALTH_HTTP_PORT", str(free_port()))
    return config


@pytest.fixture
def apps() -> Iterator[list[App]]:
    opened: list[App] = []
    yield opened
    for app in opened:
        app.close()


def open_real_app(apps: list[App]) -> App:
    app = open_app(load_settings())
    apps.append(app)
    return app


def entries(body: dict[str, Any], component: str) -> list[dict[str, Any]]:
    """Every application/health+json check entry of ``component``."""
    return [e for group in body["checks"].values() for e in group if e["componentId"] == component]


def wait_for(read: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool]) -> Any:
    """Poll ``read`` until ``done`` holds; the last response."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = read()
        if done(response):
            return response
        assert time.monotonic() < deadline, f"still {response.status_code}: {response.text}"
        time.sleep(0.1)


def test_ollama_stopped_is_warn_200_with_ollama_unhealthy(
    relaxed: Path,
    fake_ollama: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    apps: list[App],
) -> None:
    """The real checks through the API: Ollama down → /health 200 warn, ollama unhealthy."""
    monkeypatch.setenv("OLLAMA_URL", fake_ollama.url)
    app = open_real_app(apps)
    clock = FakeClock()
    # Checked on request, so each GET below runs the real checks (a stale result only).
    monitor = HealthMonitor(build_checks(app), interval_s=15, on_demand=True, clock=clock.monotonic)
    registry = build_registry(app, monitor, process_metrics=False)
    with TestClient(create_api(monitor=monitor, app=app, registry=registry)) as client:
        up = client.get("/health")
        assert up.status_code == 200
        assert {e["status"] for e in entries(up.json(), "ollama")} == {"pass"}
        assert {e["status"] for e in entries(up.json(), "duckdb")} == {"pass"}

        fake_ollama.stop()
        clock.advance(15)
        down = client.get("/health")
        assert down.status_code == 200
        body = down.json()
        assert body["status"] == "warn"
        assert "fail" in {e["status"] for e in entries(body, "ollama")}
        assert "ollama unhealthy" in body["output"]
        assert {e["status"] for e in entries(body, "duckdb")} == {"pass"}

        ollama = client.get("/health/ollama")
        assert ollama.json()["status"] == "unhealthy"
        assert "fallback" in ollama.json()["output"]
        assert client.get("/metrics").status_code == 200
    sample = registry.get_sample_value
    assert sample("biomem_health_status", {"component": "ollama"}) == 2
    assert sample("biomem_health_status", {"component": "overall"}) == 1


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param("close", id="store-closed"),
        pytest.param("unlink", id="store-file-removed"),
    ],
)
def test_broken_store_is_fail_503_from_the_daemons_server(
    relaxed: Path, apps: list[App], breakage: str
) -> None:
    """The real checks on the background monitor, over real HTTP: DuckDB broken → 503 fail."""
    app = open_real_app(apps)
    monitor = HealthMonitor(build_checks(app), interval_s=0.5)
    monitor.start()
    try:
        with (
            build_health_server(app, monitor) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            # The first pass (before it, every component is "not checked yet").
            wait_for(
                lambda: client.get("/health"),
                lambda r: {e["status"] for e in entries(r.json(), "duckdb")} == {"pass"},
            )
            if breakage == "close":
                app.store.close()
            else:
                app.store.path.unlink()
            failing = wait_for(lambda: client.get("/health"), lambda r: r.status_code == 503)
            body = failing.json()
            assert body["status"] == "fail"
            assert "fail" in {e["status"] for e in entries(body, "duckdb")}
            assert "duckdb critical" in body["output"]
            duckdb = client.get("/health/duckdb")
            assert duckdb.status_code == 503
            assert duckdb.json()["status"] == "critical"
            if breakage == "close":
                assert client.get("/readyz").status_code == 503
    finally:
        monitor.stop()


@pytest.mark.slow
def test_daemon_without_continuous_monitoring_checks_on_request(
    relaxed: Path, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    """`biomem run` with HEALTH_CONTINUOUS_MONITORING=false: /health follows an outage."""
    port = free_port()
    env = {
        "OLLAMA_URL": fake_ollama.url,
        "HEALTH_HTTP_ENDPOINTS": "true",
        "HEALTH_HTTP_PORT": str(port),
        "HEALTH_CONTINUOUS_MONITORING": "false",
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
    }
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "biomem", "run"], env=cli_env(env), stdout=log, stderr=log
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

                def health() -> httpx.Response:
                    assert daemon.poll() is None, log_path.read_text()
                    try:
                        return client.get("/health")
                    except httpx.TransportError:
                        return httpx.Response(599)  # not listening yet

                up = wait_for(
                    health,
                    lambda r: (
                        r.status_code == 200
                        and {e["status"] for e in entries(r.json(), "ollama")} == {"pass"}
                    ),
                )
                max_age = int(up.headers["cache-control"].removeprefix("max-age="))
                assert 0 <= max_age <= 1
                fake_ollama.stop()
                down = wait_for(
                    health,
                    lambda r: "fail" in {e["status"] for e in entries(r.json(), "ollama")},
                )
                assert down.status_code == 200
                assert down.json()["status"] == "warn"
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    assert daemon.returncode == 0, log_path.read_text()
    assert "health checks: on request" in log_path.read_text()
