"""The real command line in a subprocess: bad settings, config display, help, the daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import SAMPLES, cli_env, run_cli
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param({"HEALTH_HTTP_PORT": "70000"}, "HEALTH_HTTP_PORT", id="port"),
        pytest.param(
            {"HEALTH_CONTINUOUS_MONITORING": "maybe"}, "HEALTH_CONTINUOUS_MONITORING", id="bool"
        ),
        pytest.param(
            {"AUTOMATED_RECOVERY_ENABLED": "maybe"}, "AUTOMATED_RECOVERY_ENABLED", id="bool2"
        ),
        pytest.param(
            {"HEALTH_ALERT_WEBHOOK_URL": "not a url"}, "HEALTH_ALERT_WEBHOOK_URL", id="url"
        ),
        pytest.param({"POSTGRES_DB_URL": "postgresql://u:pw@:x/"}, "POSTGRES_DB_URL", id="pg-url"),
    ],
)
@pytest.mark.parametrize("command", ["run", "ingest", "config"])
def test_bad_setting_stops_with_one_line_exit_2(
    env: dict[str, str], names: str, command: str, tmp_path: Path
) -> None:
    """Every command refuses a bad setting with one stderr line naming it, exit 2, before acting."""
    args = [command, "-"] if command == "ingest" else [command]
    result = run_cli(*args, env=env, input_bytes=b"")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"biomem: configuration error: {names}")
    assert "accepts" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()  # nothing was done, not even the store created


def test_unknown_toml_key_exits_2(tmp_path: Path) -> None:
    """An unknown key in the TOML file stops the program with one line naming it."""
    config = tmp_path / "c.toml"
    config.write_text("[schedules]\ndreamz = '1h'\n")
    result = run_cli("config", env={"BIOMEM_CONFIG_FILE": str(config)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "[schedules].dreamz: unknown key" in result.stderr


def test_config_shows_no_secret() -> None:
    """`biomem config` prints the effective configuration with every secret masked."""
    env = {
        "POSTGRES_DB_URL": "postgresql://app:Pg-Pass-77@db:5432/mem",
        "HEALTH_API_TOKEN": "Api-Token-0123456789",
        "ALERT_WEBHOOK_SECRET": "Hmac-Secret-0123456789",
        "HEALTH_ALERT_WEBHOOK_URL": "https://hooks.example/services/Hook-Token",
    }
    result = run_cli("config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("Pg-Pass-77", "Api-Token", "Hmac-Secret", "Hook-Token"):
        assert secret not in result.stdout and secret not in result.stderr
    shown = json.loads(result.stdout)
    assert shown["postgres"]["url"] == "postgresql://app:***@db:5432/mem"
    assert shown["health"]["port"] == 8080


def test_help_lists_the_commands() -> None:
    """`biomem --help` lists every command."""
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "ingest", "config", "quarantine"):
        assert command in result.stdout


def start_daemon(env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run"],
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("running"):
            return proc
    proc.kill()
    raise AssertionError(
        f"daemon did not start: {lines} {proc.stderr.read() if proc.stderr else ''}"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_stops_cleanly_on_signal(signum: int, store_path: Path) -> None:
    """`biomem run` reports the store, runs until signalled, then exits 0 within 5 s."""
    proc = start_daemon()
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert store_path.exists()


def test_second_process_is_told_who_holds_the_store(store_path: Path) -> None:
    """While `biomem run` holds the store, `biomem ingest` names the file and the daemon."""
    proc = start_daemon()
    try:
        result = run_cli("ingest", "-", input_bytes=b"")
        assert result.returncode == 1
        line = result.stderr.strip().splitlines()[-1]
        assert str(store_path) in line and f"process {proc.pid}" in line and "biomem" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
    assert proc.returncode == 0


def test_daemon_ingests_from_postgres(pg_clean_url: str, store_path: Path) -> None:
    """With POSTGRES_DB_URL set, the daemon ingests the table as soon as it starts."""
    with psycopg.connect(pg_clean_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.memories (id int PRIMARY KEY, content text, created_at"
            " timestamptz NOT NULL, updated_at timestamptz NOT NULL, metadata jsonb);"
            "INSERT INTO public.memories SELECT g, 'memory ' || g, now(), now(), '{}'"
            " FROM generate_series(1, 30) g"
        )
    proc = start_daemon({"POSTGRES_DB_URL": pg_clean_url})
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        done = None
        while time.monotonic() < deadline and done is None:
            line = proc.stderr.readline()
            if '"ingest_done"' in line:
                done = json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
    assert done is not None and done["ingested"] == 30
    assert proc.returncode == 0


def test_daemon_runs_the_pipeline_on_samples_in_fallback_mode(store_path: Path) -> None:
    """`make run`: samples ingested, the daemon runs every stage once and shows the summary."""
    assert run_cli("ingest", str(SAMPLES)).returncode == 0
    proc = start_daemon({"OLLAMA_URL": "http://127.0.0.1:1"})
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "writeback" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    text = "".join(seen)
    assert "biomem pipeline run" in text
    assert "short_term" in text and "600 (100%)" in text  # all by the fallback
    assert "dreams" in text and "deferred" in text
    assert proc.returncode == 0


def test_run_once_and_recall_from_the_cli(store_path: Path) -> None:
    """`biomem run --once` exits 0 in fallback mode; `biomem recall --json` explains its ranking."""
    env = {"OLLAMA_URL": "http://127.0.0.1:1"}
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    result = run_cli("run", "--once", "--as-of", "2026-11-16T00:00:00Z", env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "homeostasis" in result.stdout
    found = run_cli("recall", "Copenhagen weekend trip", "--k", "3", "--json", env=env)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3
    assert "copenhagen" in hits[0]["content"].lower()
    assert set(hits[0]["why"]) == {"similarity", "strength", "recency", "access", "embedding"}


def test_unknown_stage_is_a_usage_error() -> None:
    """`--stage nonsense` stops with one line listing the known stages, exit 2."""
    result = run_cli("run", "--once", "--stage", "nonsense")
    assert result.returncode == 2
    assert "unknown stage" in result.stderr and "short_term" in result.stderr


def test_dlq_commands_show_and_keep_work_postgres_could_not_take(tmp_path: Path) -> None:
    """With PostgreSQL unreachable, `run --once` leaves dead letters that `biomem dlq` lists,
    shows without secrets, refuses to purge while pending, and cannot replay yet."""
    config = tmp_path / "fast.toml"
    config.write_text("[resilience.postgresql]\nmax_attempts = 1\n")
    env = {
        "POSTGRES_DB_URL": "postgresql://app:Pg-Secret-9@127.0.0.1:1/memories",
        "OLLAMA_URL": "http://127.0.0.1:1",
        "BIOMEM_CONFIG_FILE": str(config),
    }
    result = run_cli("run", "--once", env=env, timeout=180)
    assert result.returncode == 1  # ingest failed
    listed = run_cli("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {letter["operation"] for letter in letters} == {"ingest_postgres", "writeback"}
    assert all(letter["status"] == "pending" for letter in letters)
    shown = run_cli("dlq", "show", letters[0]["id"], env=env)
    assert shown.returncode == 0 and letters[0]["id"] in shown.stdout
    everything = result.stdout + result.stderr + listed.stdout + shown.stdout
    assert "Pg-Secret-9" not in everything
    refused = run_cli("dlq", "purge", "--status", "pending", env=env)
    assert refused.returncode == 2
    dry = run_cli("dlq", "replay", "--all", "--dry-run", env=env)
    assert dry.returncode == 0 and "would replay 2" in dry.stdout
    replayed = run_cli("dlq", "replay", "--all", env=env, timeout=120)
    assert replayed.returncode == 1 and "failed 2" in replayed.stdout


def test_health_command_exit_codes(fake_ollama: FakeOllama) -> None:
    """`biomem health` exits 0 pass, 1 warn, 2 fail: no Ollama makes the whole warn and
    the ollama service fail; with Ollama up the ollama service passes."""
    down = {"OLLAMA_URL": "http://127.0.0.1:1"}
    whole = run_cli("health", "--json", env=down)
    assert whole.returncode == 1, whole.stderr
    body = json.loads(whole.stdout)
    assert body["status"] == "warn"
    assert body["components"]["ollama"]["state"] == "unhealthy"
    assert body["components"]["postgresql"]["state"] == "unknown"
    assert run_cli("health", "ollama", env=down).returncode == 2
    up = run_cli("health", "ollama", "--json", env={"OLLAMA_URL": fake_ollama.url})
    assert up.returncode == 0, up.stdout
    assert run_cli("health", "nonsense").returncode == 2


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_daemon_serves_health_that_tells_the_truth_without_ollama() -> None:
    """`biomem run` serves /health: without Ollama it is warn (HTTP 200), ollama unhealthy,
    fallback in use; /livez, /readyz and /metrics answer; SIGTERM still exits 0."""
    import httpx

    port = free_port()
    env = {
        "HEALTH_HTTP_ENDPOINTS": "true",
        "HEALTH_HTTP_PORT": str(port),
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "OLLAMA_URL": "http://127.0.0.1:1",
    }
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    proc = start_daemon(env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ollama: dict[str, object] = {"status": "unknown"}
        while time.monotonic() < deadline and ollama["status"] == "unknown":
            time.sleep(0.2)  # the monitor's first pass is under way
            ollama = httpx.get(base + "/health/ollama", timeout=5).json()
        response = httpx.get(base + "/health", timeout=5)
        body = response.json()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/health+json")
        assert body["status"] == "warn"
        assert ollama["status"] == "unhealthy" and "fallback" in (ollama["output"] or "")
        assert httpx.get(base + "/livez", timeout=5).status_code == 200
        assert httpx.get(base + "/readyz", timeout=5).status_code == 200
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert "biomem_health_status" in metrics and "biomem_breaker_state" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_daemon_beyond_loopback_refuses_to_start_without_token() -> None:
    """Bound beyond loopback without HEALTH_API_TOKEN, `biomem run` stops with one line, exit 2."""
    result = run_cli(
        "run",
        env={"HEALTH_HTTP_ENDPOINTS": "true", "HEALTH_HTTP_HOST": "0.0.0.0"},
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("biomem: configuration error: HEALTH_API_TOKEN")
    )
