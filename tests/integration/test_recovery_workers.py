"""Commands biomem starts are workers of its registry: a restart command that hangs past its
deadline is a stuck worker, and the workers_stuck rule ends it (SIGTERM, then SIGKILL) — with
the real health check, signals and engine of the daemon, and a real child that ignores SIGTERM."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from biomem.app import App
from biomem.health.checks import OllamaCheck
from biomem.health.monitor import HealthMonitor
from biomem.recovery import RecoveryAudit, RecoveryService
from biomem.resilience.clock import FakeClock
from tests.support.recovery import make_app, outcomes

pytestmark = pytest.mark.integration

# Ignores SIGTERM, says so (the file), then hangs: only SIGKILL ends it.
DEAF = """\
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(300)
"""


def _wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[App]:
    script = tmp_path / "deaf_restart.py"
    script.write_text(DEAF, encoding="utf-8")
    argv = [sys.executable, str(script), str(tmp_path / "ours-ready")]
    config = tmp_path / "biomem.toml"
    config.write_text(
        "[recovery]\n"
        f"ollama_restart_command = {json.dumps(argv)}\n"
        "command_timeout_seconds = 30\n"
        "worker_grace_seconds = 1\n"
        '[[recovery.rules]]\nname = "ollama_restart"\nconsecutive_checks = 1\n',
        encoding="utf-8",
    )
    # Nothing listens on port 1: the real Ollama check finds Ollama down.
    application = make_app(
        monkeypatch, clock, BIOMEM_CONFIG_FILE=str(config), OLLAMA_URL="http://127.0.0.1:1"
    )
    try:
        yield application
    finally:
        application.close()


def test_a_hanging_restart_command_is_a_stuck_worker_that_workers_stuck_ends(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    """The engine starts the restart and goes on; past the deadline workers_stuck SIGTERMs it,
    then SIGKILLs it; a process biomem did not start, as deaf, is never touched."""
    monitor = HealthMonitor([OllamaCheck(app)])
    service = RecoveryService(app, monitor, None, clock=clock)
    stranger_ready = tmp_path / "stranger-ready"
    stranger = subprocess.Popen(
        [sys.executable, "-c", DEAF, str(stranger_ready)], start_new_session=True
    )
    try:
        asyncio.run(monitor.run_once())
        assert monitor.snapshot().components["ollama"].status.rank >= 3  # unhealthy or worse
        first = [r for r in service.engine.tick() if r.rule == "ollama_restart"]
        # Started and not waited for: the tick is over while the command still runs.
        assert outcomes(first) == [
            ("restart_ollama", "started", None),
            ("clear_llm_cache", "done", None),
        ]
        pid = int(first[0].detail["pid"])
        _wait_for(tmp_path / "ours-ready")
        _wait_for(stranger_ready)
        assert _alive(pid)
        assert [w.pid for w in service.processes.workers()] == [pid]
        assert service.processes.stuck(clock.monotonic()) == []

        clock.advance(31)  # past its 30 s deadline: a stuck worker
        second = service.engine.tick()
        by_rule = {(r.rule, r.action): r for r in second}
        terminate = by_rule[("workers_stuck", "terminate_stuck_workers")]
        assert (terminate.outcome, terminate.detail["killed"]) == ("done", [pid])
        assert terminate.trigger == f"worker(s) {pid} past their deadline"
        ended = by_rule[("ollama_restart", "restart_ollama")]
        assert (ended.outcome, ended.phase, ended.detail["ended_by"]) == (
            "failed",
            "act",
            "SIGKILL",
        )
        assert ended.summary.startswith("ran past its 30 s deadline; ended by SIGKILL")
        assert not _alive(pid)
        assert stranger.poll() is None and _alive(stranger.pid)
        assert service.processes.workers() == []

        audit = RecoveryAudit(app.store)
        assert [(h["action"], h["outcome"]) for h in audit.history(rule="workers_stuck")] == [
            ("terminate_stuck_workers", "done")
        ]
        assert [(h["action"], h["outcome"]) for h in audit.history(rule="ollama_restart")] == [
            ("restart_ollama", "failed"),  # its end, collected after the rules
            ("restart_ollama+clear_llm_cache", "skipped"),  # the rule itself cools down
            ("clear_llm_cache", "done"),
            ("restart_ollama", "started"),
        ]
    finally:
        stranger.kill()
        stranger.wait()
        service.stop()


def test_the_daemon_ends_a_command_still_running_when_it_stops(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    """RecoveryService.stop ends what it started (audited): nothing outlives biomem."""
    monitor = HealthMonitor([OllamaCheck(app)])
    service = RecoveryService(app, monitor, None, clock=clock)
    asyncio.run(monitor.run_once())
    (started,) = [r for r in service.engine.tick() if r.action == "restart_ollama"]
    pid = int(started.detail["pid"])
    _wait_for(tmp_path / "ours-ready")
    service.stop()
    assert not _alive(pid)
    (ended, *_) = RecoveryAudit(app.store).history(rule="ollama_restart")
    assert (ended["action"], ended["outcome"], ended["detail"]["ended_by"]) == (
        "restart_ollama",
        "failed",
        "SIGKILL",
    )
