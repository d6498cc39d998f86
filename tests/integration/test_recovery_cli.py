"""Recovery's surfaces: `biomem recovery rules|history|run` on the store and through a running
daemon's API, and the daemon acting on a real outage (Ollama down → the configured restart
command → Ollama back), seen in /health/detailed, /metrics, the audit and the log file."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cli_env, run_cli
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.integration

RECORDER = """\
import json, sys
from pathlib import Path
Path(sys.argv[1]).write_text(json.dumps(sys.argv[2:]))
"""


def _config(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    script = tmp_path / "restart.py"
    script.write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "argv.json"
    argv = [sys.executable, str(script), str(record), "restart", "ollama"]
    path = tmp_path / "biomem.toml"
    path.write_text(
        f"[recovery]\nollama_restart_command = {json.dumps(argv)}\n{extra}", encoding="utf-8"
    )
    return path, record


def test_rules_lists_the_defaults_with_overrides(tmp_path: Path) -> None:
    """`recovery rules` shows every rule in effect, its trigger, actions and limits."""
    config, _ = _config(tmp_path, '[[recovery.rules]]\nname = "ollama_restart"\nenabled = false\n')
    done = run_cli("recovery", "rules", env={"BIOMEM_CONFIG_FILE": str(config)})
    assert done.returncode == 0, done.stderr
    assert "automated recovery enabled" in done.stdout
    assert (
        "postgres_pool_reset: when postgresql unhealthy/critical × 3 → reset_postgres_pool"
        in done.stdout
    )
    assert "ollama_restart (disabled)" in done.stdout
    as_json = run_cli("recovery", "rules", "--json", env={"BIOMEM_CONFIG_FILE": str(config)})
    names = [json.loads(line)["name"] for line in as_json.stdout.splitlines()]
    assert len(names) == 10 and names[0] == "postgres_pool_reset"


def test_run_dry_run_renders_and_history_tells(tmp_path: Path) -> None:
    """`run RULE --dry-run` prints the exact command and does nothing; `history` shows it."""
    config, record = _config(tmp_path)
    env = {"BIOMEM_CONFIG_FILE": str(config)}
    done = run_cli("recovery", "run", "ollama_restart", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert (
        "restart_ollama: skipped (dry_run): dry run: would restart_ollama on ollama" in done.stdout
    )
    assert "restart" in done.stdout and str(record) in done.stdout
    assert not record.exists()
    real = run_cli("recovery", "run", "ollama_restart", env=env)
    assert real.returncode == 0, real.stderr
    assert json.loads(record.read_text()) == ["restart", "ollama"]
    history = run_cli("recovery", "history", "--json", env=env)
    rows = [json.loads(line) for line in history.stdout.splitlines()]
    assert [(r["action"], r["outcome"], r["reason"]) for r in rows] == [
        ("restart_ollama", "done", None),  # the command's end, waited for by the one-off run
        ("clear_llm_cache", "done", None),
        ("restart_ollama", "started", None),
        ("clear_llm_cache", "skipped", "dry_run"),
        ("restart_ollama", "skipped", "dry_run"),
    ]
    assert all(r["phase"] == "manual" for r in rows)
    plain = run_cli("recovery", "history", "--rule", "ollama_restart", env=env)
    assert "restart_ollama" in plain.stdout and "skipped (dry_run)" in plain.stdout


def test_recovery_dry_run_switch_applies_to_manual_runs(tmp_path: Path) -> None:
    """RECOVERY_DRY_RUN=true: `run` renders without --dry-run."""
    config, record = _config(tmp_path)
    env = {"BIOMEM_CONFIG_FILE": str(config), "RECOVERY_DRY_RUN": "true"}
    done = run_cli("recovery", "run", "ollama_restart", env=env)
    assert done.returncode == 0 and "skipped (dry_run)" in done.stdout
    assert not record.exists()


def test_unknown_rule_is_a_usage_error() -> None:
    """An unknown rule exits 2 naming the known ones."""
    done = run_cli("recovery", "run", "reboot_the_world")
    assert done.returncode == 2
    assert "no recovery rule 'reboot_the_world'" in done.stderr and "duckdb_reopen" in done.stderr


def test_a_failed_action_exits_1(tmp_path: Path) -> None:
    """A restart command that exits non-zero fails the run."""
    path = tmp_path / "biomem.toml"
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    path.write_text(f"[recovery]\nollama_restart_command = {json.dumps(argv)}\n")
    done = run_cli("recovery", "run", "ollama_restart", env={"BIOMEM_CONFIG_FILE": str(path)})
    assert done.returncode == 1
    assert "restart_ollama: failed: command exited 3" in done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, predicate: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_daemon_restarts_a_down_ollama_with_the_configured_command(tmp_path: Path) -> None:
    """Ollama refuses → ollama_restart fires after two checks → the command runs → Ollama back."""
    ollama = FakeOllama()
    ollama.start()
    ollama.refuse()
    config, record = _config(
        tmp_path,
        "interval_seconds = 0.5\n"
        '[[recovery.rules]]\nname = "ollama_restart"\nconsecutive_checks = 2\n'
        "cooldown_seconds = 600\n",
    )
    port = _free_port()
    log_file = tmp_path / "logs" / "biomem.log"
    env = {
        "BIOMEM_CONFIG_FILE": str(config),
        "OLLAMA_URL": ollama.url,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "HEALTH_HTTP_ENDPOINTS": "true",
        "HEALTH_HTTP_PORT": str(port),
        "BIOMEM_LOG_FILE": str(log_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run"],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for("the restart command", record.exists)
        assert json.loads(record.read_text()) == ["restart", "ollama"]
        ollama.restart()  # what the command would have done

        def recent() -> list[dict[str, Any]]:
            try:
                body = httpx.get(f"{base}/health/detailed", timeout=5).json()
            except httpx.HTTPError:
                return []
            return list(body.get("recovery", {}).get("recent", []))

        def acted() -> list[tuple[str, str]]:  # the rule's cooldown skips left out
            return [(r["action"], r["outcome"]) for r in reversed(recent()) if r["reason"] is None]

        # Started (the engine does not wait for it), the cache cleared, then its end seen.
        _wait_for("the audit in /health/detailed", lambda: len(acted()) >= 3)
        assert acted()[:3] == [
            ("restart_ollama", "started"),
            ("clear_llm_cache", "done"),
            ("restart_ollama", "done"),
        ]
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert (
            'biomem_recovery_actions_total{action="restart_ollama",result="done",'
            'rule="ollama_restart"} 1.0' in metrics
        )
        _wait_for(
            "ollama healthy again",
            lambda: httpx.get(f"{base}/health/ollama", timeout=5).json()["status"] == "healthy",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        ollama.stop()
    assert proc.returncode == 0
    rows = [
        json.loads(line)
        for line in run_cli("recovery", "history", "--json", env=env).stdout.splitlines()
    ]
    assert ("restart_ollama", "done", "act") in [
        (r["action"], r["outcome"], r["phase"]) for r in rows
    ]
    assert rows[-1]["trigger"] == "ollama unhealthy for 2 check(s) in a row"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(line.get("event") == "recovery_action" for line in lines)


TOKEN = "recovery-cli-token-0123456789"


@pytest.mark.slow
def test_rules_history_and_run_ask_the_running_daemon(tmp_path: Path, fake_ollama: Any) -> None:
    """While `biomem run` holds the store, `recovery run|history|rules` go through its API with
    the token: the rule runs in the daemon, whose engine collects the command's end."""
    config, record = _config(tmp_path, "interval_seconds = 0.5\n")
    port = _free_port()
    env = {
        "BIOMEM_CONFIG_FILE": str(config),
        "OLLAMA_URL": fake_ollama.url,
        "HEALTH_HTTP_ENDPOINTS": "true",
        "HEALTH_HTTP_PORT": str(port),
        "HEALTH_API_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run"],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def history() -> list[dict[str, Any]]:
        done = run_cli("recovery", "history", "--json", env=env)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    try:
        _wait_for("the daemon's API", lambda: _answers(f"http://127.0.0.1:{port}/livez"))
        dry = run_cli("recovery", "run", "ollama_restart", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "restart_ollama: skipped (dry_run)" in dry.stdout and not record.exists()

        real = run_cli("recovery", "run", "ollama_restart", env=env)
        assert real.returncode == 0, real.stderr
        assert "restart_ollama: started: command started (pid" in real.stdout
        assert "clear_llm_cache: done" in real.stdout
        assert "its end shows in `biomem recovery history`" in real.stdout
        _wait_for("the restart command", record.exists)
        assert json.loads(record.read_text()) == ["restart", "ollama"]
        # The daemon's engine sees the command end and audits it.
        _wait_for(
            "the command's end in the history",
            lambda: ("restart_ollama", "done") in [(r["action"], r["outcome"]) for r in history()],
        )
        rows = history()
        assert [(r["action"], r["outcome"], r["reason"], r["phase"]) for r in rows] == [
            ("restart_ollama", "done", None, "manual"),
            ("clear_llm_cache", "done", None, "manual"),
            ("restart_ollama", "started", None, "manual"),
            ("clear_llm_cache", "skipped", "dry_run", "manual"),
            ("restart_ollama", "skipped", "dry_run", "manual"),
        ]
        assert rows[0]["summary"].startswith("command exited 0 after")
        only = run_cli("recovery", "history", "--rule", "nothing_like_it", env=env)
        assert (only.returncode, only.stdout.strip()) == (0, "no recovery decisions recorded")

        rules = run_cli("recovery", "rules", env=env)
        assert rules.returncode == 0, rules.stderr
        assert "state unavailable" not in rules.stderr
        assert "ollama_restart: when ollama unhealthy/critical × 5" in rules.stdout

        unknown = run_cli("recovery", "run", "reboot_the_world", env=env)
        assert unknown.returncode == 2
        assert "no recovery rule 'reboot_the_world'" in unknown.stderr
        assert "duckdb_reopen" in unknown.stderr
        wrong = run_cli("recovery", "history", env={**env, "HEALTH_API_TOKEN": "x" * 24})
        assert wrong.returncode == 1
        assert "the daemon refused the request: set HEALTH_API_TOKEN" in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    # The daemon gone, the same history is read from the store itself.
    assert history() == rows


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
