"""Shared fixtures: the PostgreSQL plugin, a clean environment, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.pg_fixtures"]

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "memories.jsonl"

# Every variable biomem reads; tests start from none of them set.
BIOMEM_VARIABLES = (
    "DUCKDB_PATH",
    "POSTGRES_DB_URL",
    "OLLAMA_URL",
    "OLLAMA_MODEL",
    "OLLAMA_EMBEDDING_MODEL",
    "OLLAMA_TIMEOUT_SECONDS",
    "OLLAMA_MAX_CONCURRENCY",
    "HEALTH_HTTP_ENDPOINTS",
    "HEALTH_HTTP_HOST",
    "HEALTH_HTTP_PORT",
    "HEALTH_API_TOKEN",
    "HEALTH_CONTINUOUS_MONITORING",
    "HEALTH_CHECK_INTERVAL_SECONDS",
    "HEALTH_ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_SECRET",
    "ALERT_GROUP_WAIT",
    "ALERT_GROUP_INTERVAL",
    "ALERT_REPEAT_INTERVAL",
    "ALERT_RESOLVE_SETTLE",
    "ALERT_RESTORE_GRACE",
    "AUTOMATED_RECOVERY_ENABLED",
    "RECOVERY_DRY_RUN",
    "BIOMEM_CONFIG_FILE",
    "BIOMEM_LOG_FORMAT",
    "BIOMEM_LOG_LEVEL",
    "BIOMEM_LOG_FILE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no biomem variable set and a store of its own."""
    for name in BIOMEM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "store" / "biomem.duckdb"))
    # Daemons started by tests do not bind port 8080; tests that want HTTP pick a free port.
    monkeypatch.setenv("HEALTH_HTTP_ENDPOINTS", "false")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "biomem.duckdb"


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: this process's (already cleaned) plus ``extra``."""
    env = dict(os.environ)
    env.setdefault("BIOMEM_LOG_FORMAT", "json")
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``biomem`` command line in a subprocess."""
    completed = subprocess.run(
        [sys.executable, "-m", "biomem", *args],
        env=cli_env(env),
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def store(store_path: Path) -> Iterator[object]:
    """An open, migrated store in a fresh file."""
    from biomem.store import DuckDBStore

    opened = DuckDBStore.open(store_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def fake_ollama() -> Iterator[object]:
    """A running Ollama-compatible fake on a free loopback port; stopped afterwards."""
    from tests.fakes.ollama import FakeOllama

    server = FakeOllama()
    server.start()
    try:
        yield server
    finally:
        server.stop()
