"""Each recovery action against the real resource: commands, files, caches, the store, processes,
schedules and dead letters — and a dry run over all of them that changes nothing."""

from __future__ import annotations

import asyncio
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from biomem.app import App
from biomem.health.checks import DuckDBCheck
from biomem.health.model import Status
from biomem.logfile import LogFile
from biomem.orchestrator import Orchestrator
from biomem.recovery import (
    ProcessRegistry,
    RecoveryAudit,
    build_actions,
    manual_engine,
    own_temp_dir,
)
from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.resilience.errors import BiomemError
from tests.support.recovery import (
    RecordingEscalator,
    ScriptedSignals,
    build_engine,
    make_app,
    outcomes,
    rule,
)

pytestmark = pytest.mark.integration

RECORDER = """\
import json, sys
from pathlib import Path
Path(sys.argv[1]).write_text(json.dumps(sys.argv[2:]))
print("restarted", flush=True)
"""


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "biomem.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    application = make_app(monkeypatch)
    try:
        yield application
    finally:
        application.close()


def test_restart_command_runs_exactly_as_configured_without_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The argv list reaches the program verbatim: spaces and shell syntax stay arguments."""
    script = tmp_path / "restart_ollama.py"
    script.write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "argv.json"
    argv = [sys.executable, str(script), str(record), "restart", "ollama", "a b", "; touch pwned"]
    path = _toml(tmp_path, f"[recovery]\nollama_restart_command = {json.dumps(argv)}\n")
    application = make_app(monkeypatch, BIOMEM_CONFIG_FILE=str(path))
    try:
        application.llm_cache.put_text("k", "an answer")
        records = manual_engine(application, None).run_rule("ollama_restart")
    finally:
        application.close()
    # Started (nothing waits for it), the cache cleared, then its end collected.
    assert outcomes(records) == [
        ("restart_ollama", "started", None),
        ("clear_llm_cache", "done", None),
        ("restart_ollama", "done", None),
    ]
    assert json.loads(record.read_text()) == argv[3:]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    started, cleared, ended = records
    assert started.arguments["argv"] == argv and ended.arguments["argv"] == argv
    assert started.detail["pid"] == ended.detail["pid"]
    assert ended.detail["exit_code"] == 0 and "restarted" in ended.detail["output"]
    assert ended.summary.startswith("command exited 0 after")
    assert cleared.detail["entries"] == 1
    # Its output spool was biomem's own temporary file, and it is gone.
    assert not list(own_temp_dir(application.store.path.parent).glob("biomem-*"))


def test_restart_is_unavailable_without_a_command(app: App) -> None:
    """No ollama_restart_command: skipped as unavailable, saying what to configure."""
    records = manual_engine(app, None).run_rule("ollama_restart")
    assert outcomes(records)[0] == ("restart_ollama", "skipped", "unavailable")
    assert "ollama_restart_command" in records[0].summary


def test_a_one_off_run_terminates_a_hanging_restart_command_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a daemon to collect it, the run waits to the deadline, then ends the command."""
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    path = _toml(
        tmp_path,
        f"[recovery]\nollama_restart_command = {json.dumps(argv)}\n"
        "command_timeout_seconds = 1\nworker_grace_seconds = 2\n",
    )
    application = make_app(monkeypatch, BIOMEM_CONFIG_FILE=str(path))
    try:
        (started, _cache, ended) = manual_engine(application, None).run_rule("ollama_restart")
    finally:
        application.close()
    assert started.outcome == "started"
    assert (ended.action, ended.outcome) == ("restart_ollama", "failed")
    assert ended.detail["ended_by"] == "SIGTERM"
    assert ended.summary.startswith("ran past its 1 s deadline; ended by SIGTERM")
    assert not psutil.pid_exists(ended.detail["pid"])


def test_stuck_workers_are_terminated_and_nothing_else_is(tmp_path: Path) -> None:
    """Only processes biomem started, past their deadline, get SIGTERM (then SIGKILL)."""
    clock = FakeClock()
    registry = ProcessRegistry(temp_dir=tmp_path / "tmp", clock=clock)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ready = tmp_path / "deaf-ready"
    stubborn = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " pathlib.Path(sys.argv[1]).touch(); time.sleep(120)",
        str(ready),
    ]
    ours = registry.spawn(sleeper, purpose="worker", deadline_s=10)
    deaf = registry.spawn(stubborn, purpose="worker", deadline_s=10)
    for _ in range(500):  # it ignores SIGTERM only once it has said so
        if ready.exists():
            break
        time.sleep(0.01)
    young = registry.spawn(sleeper, purpose="worker", deadline_s=1000)
    stranger = subprocess.Popen(sleeper)  # not biomem's: must survive
    try:
        assert registry.stuck(clock.monotonic()) == []
        clock.advance(11)
        assert {w.pid for w in registry.stuck(clock.monotonic())} == {ours.pid, deaf.pid}
        report = registry.terminate([ours.pid, deaf.pid, stranger.pid], grace_s=1.0)
        assert report.terminated == (ours.pid,)
        assert report.killed == (deaf.pid,)
        assert report.refused == (stranger.pid,)
        assert stranger.poll() is None and psutil.pid_exists(young.pid)
        assert [w.pid for w in registry.workers()] == [young.pid]
    finally:
        stranger.kill()
        stranger.wait()
        registry.close(grace_s=1.0)
    assert not psutil.pid_exists(young.pid) or psutil.Process(young.pid).status() == "zombie"


def _plant_temp_files(app: App) -> dict[str, Path]:
    data = app.store.path.parent
    spill = app.store.path.with_name(app.store.path.name + ".tmp")
    spill.mkdir(exist_ok=True)
    own = own_temp_dir(data)
    own.mkdir(exist_ok=True)
    files = {
        "spill": spill / "duckdb_temp_storage-0.tmp",
        "spill_open": spill / "duckdb_temp_block-1.block",
        "own": own / "biomem-restart_ollama-0123.out",
        "foreign_in_tmp": own / "somebody-else.txt",
        "data": data / "keep-me.json",
    }
    for name, path in files.items():
        path.write_bytes(b"x" * (1000 if name == "spill" else 10))
    return files


def test_remove_temp_files_touches_only_our_unopened_files(app: App) -> None:
    """DuckDB's spill files and biomem-* spools go; open, foreign and other files stay."""
    files = _plant_temp_files(app)
    with files["spill_open"].open("rb"):
        records = manual_engine(app, None).run_rule("disk_pressure")
    remove = records[0]
    assert (remove.action, remove.outcome) == ("remove_temp_files", "done")
    assert remove.detail["removed"] == 2 and remove.detail["bytes_freed"] == 1010
    assert not files["spill"].exists() and not files["own"].exists()
    assert files["spill_open"].exists() and files["foreign_in_tmp"].exists()
    assert files["data"].exists() and app.store.path.exists()
    assert outcomes(records)[1] == ("rotate_logs", "skipped", "unavailable")


def test_rotate_logs_keeps_the_newest_files(tmp_path: Path, app: App) -> None:
    """Each rotation moves the log aside and starts a new one; beyond log_keep the oldest go."""
    log = LogFile(tmp_path / "logs" / "biomem.log")
    clock = FakeClock()
    engine = build_engine(
        app,
        ScriptedSignals(),
        clock,
        [rule("logs", component="system_resources", actions=["rotate_logs"])],
        actions=build_actions(),
        log_file=log,
    )
    reports = []
    for n in range(7):
        log.write(json.dumps({"event": f"line {n}"}))
        (record,) = engine.run_rule("logs")
        reports.append(record)
    assert all(r.outcome == "done" for r in reports)
    assert len(log.rotated_files()) == 5  # the default log_keep
    assert reports[-1].detail["removed"] and reports[-1].detail["bytes_freed"] > 0
    newest = log.rotated_files()[-1].read_text()
    assert json.loads(newest) == {"event": "line 6"}
    log.write("after")
    assert log.path.read_text() == "after\n"
    log.close()


def test_clear_llm_cache_empties_the_cache_the_client_uses(
    monkeypatch: pytest.MonkeyPatch, fake_ollama: Any
) -> None:
    """A second identical request is answered by the cache; after clearing, by Ollama again."""
    app = make_app(monkeypatch, OLLAMA_URL=fake_ollama.url)

    async def ask() -> list[list[float]]:
        async with httpx.AsyncClient() as http:
            return await app.ollama_factory()(http).embed(["the staging database is full"])

    try:
        first = asyncio.run(ask())
        assert asyncio.run(ask()) == first
        assert fake_ollama.request_count("/api/embed") == 1
        (record,) = manual_engine(app, None).run_rule("ollama_restart")[1:]
        assert (record.action, record.detail["entries"]) == ("clear_llm_cache", 1)
        assert len(app.llm_cache) == 0
        asyncio.run(ask())
        assert fake_ollama.request_count("/api/embed") == 2
    finally:
        app.close()


def test_checkpoint_then_reopen_keeps_the_data(app: App) -> None:
    """duckdb_reopen: the WAL is written to the file, the connection is new, the rows remain."""
    app.store.execute("CHECKPOINT")
    app.store.execute("CREATE TABLE scratch (n INTEGER)")
    app.store.execute("INSERT INTO scratch SELECT * FROM range(1000)")
    app.store.execute("CREATE TEMP TABLE marker (n INTEGER)")  # lives on the connection only
    records = manual_engine(app, None).run_rule("duckdb_reopen")
    assert outcomes(records) == [
        ("checkpoint_duckdb", "done", None),
        ("reopen_duckdb", "done", None),
    ]
    assert records[0].detail["wal_bytes"] > 0
    assert app.store.fetchone("SELECT count(*) FROM scratch") == (1000,)
    assert app.store.fetchone(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'marker'"
    ) == (0,)


def test_a_store_that_cannot_be_reopened_stays_closed_until_it_can(app: App) -> None:
    """The reopen fails while the directory is gone (audit waits in memory), then succeeds."""
    data = app.store.path.parent
    moved = data.with_name(data.name + "-away")
    engine = manual_engine(app, None)
    data.rename(moved)
    try:
        (checkpoint, reopen) = engine.run_rule("duckdb_reopen")
        assert reopen.outcome == "failed" and app.store.closed
        check = asyncio.run(DuckDBCheck(app).run())
        assert check.status is Status.CRITICAL
        with pytest.raises(BiomemError):
            app.store.execute("SELECT 1")
    finally:
        moved.rename(data)
    assert outcomes(engine.run_rule("duckdb_reopen"))[-1] == ("reopen_duckdb", "done", None)
    history = RecoveryAudit(app.store).history(rule="duckdb_reopen")
    # The rows decided while the store was away were kept and written now.
    assert [h["outcome"] for h in history][-2:] == ["failed", checkpoint.outcome]


def test_collect_garbage_reports_resident_memory(app: App) -> None:
    """gc.collect() and malloc_trim(0) on glibc; the report gives resident memory before/after."""
    (gc_record, _, _) = manual_engine(app, None).run_rule("memory_pressure")
    assert gc_record.outcome == "done"
    assert gc_record.detail["rss_before"] > 0 and gc_record.detail["rss_after"] > 0
    if platform.libc_ver()[0] == "glibc":
        assert gc_record.detail["malloc_trim_released"] is not None


def test_pause_and_resume_act_on_the_schedules(app: App) -> None:
    """Resources critical pause consolidation and dreams; healthy again resumes them."""
    orchestrator = Orchestrator(app)
    orchestrator.start(initial_pass=False)
    try:
        clock = FakeClock()
        signals = ScriptedSignals()
        heavy = next(
            r for r in app.settings.recovery.active_rules() if r.name == "heavy_stages_pause"
        )
        engine = build_engine(
            app, signals, clock, [heavy], actions=build_actions(), orchestrator=orchestrator
        )
        signals.check(system_resources=Status.CRITICAL)
        assert engine.tick() == []  # two checks in a row are needed
        signals.check(system_resources=Status.CRITICAL)
        (pause,) = engine.tick()
        assert pause.detail["paused"] == ["consolidation", "dreams"]
        paused = orchestrator.scheduled_stages()
        assert paused["consolidation"] and paused["dreams"] and not paused["short_term"]
        signals.check(system_resources=Status.HEALTHY)
        (resume,) = engine.tick()
        assert resume.detail["resumed"] == ["consolidation", "dreams"]
        assert not any(orchestrator.scheduled_stages().values())
    finally:
        orchestrator.stop()


def test_replay_dead_letters_runs_the_real_operations(app: App) -> None:
    """dead_letter_backlog: due letters are replayed through the orchestrator's handlers."""
    orchestrator = Orchestrator(app)
    app.dlq.base_delay_s = 0.0  # due at once
    for n in range(3):
        app.dlq.put(
            "writeback",
            {},
            ConnectionError("down"),
            idempotency_key=f"wb-{n}",
            component="postgresql",
        )
    clock = FakeClock()
    signals = ScriptedSignals(dead_letters=3)
    backlog = rule(
        "backlog", component="pipeline", trigger="dead_letters", dead_letters_above=2,
        actions=["replay_dead_letters"],
    )  # fmt: skip
    engine = build_engine(
        app, signals, clock, [backlog], actions=build_actions(), orchestrator=orchestrator
    )
    (record,) = engine.tick()
    assert (record.outcome, record.detail["recovered"]) == ("done", 3)
    assert app.dlq.counts().get(DeadLetterStatus.PENDING, 0) == 0


def _wal(app: App) -> int:
    wal = app.store.path.with_name(app.store.path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def _state(app: App, tmp_path: Path, log: LogFile, worker_pid: int) -> dict[str, Any]:
    files = app.store.path.parent.rglob("*")
    return {
        "cache": len(app.llm_cache),
        # The WAL grows with the audit rows a dry run writes: compared apart.
        "files": sorted(str(p) for p in files if p.is_file() and p.suffix != ".wal"),
        "marker": app.store.fetchone(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'marker'"
        ),
        "rotated": log.rotated_files(),
        "restart_ran": (tmp_path / "argv.json").exists(),
        "worker_alive": psutil.pid_exists(worker_pid),
        "pending": app.dlq.counts().get(DeadLetterStatus.PENDING, 0),
        "rule_state": RecoveryAudit(app.store).load_states(),
    }


def test_dry_run_of_every_action_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every action rendered (action, target, arguments), none done: the state is the same after."""
    script = tmp_path / "restart.py"
    script.write_text(RECORDER, encoding="utf-8")
    argv = [sys.executable, str(script), str(tmp_path / "argv.json")]
    path = _toml(
        tmp_path,
        f"[recovery]\nollama_restart_command = {json.dumps(argv)}\n"
        '[[recovery.rules]]\nname = "everything"\ncomponent = "duckdb"\n'
        'actions = ["checkpoint_duckdb", "reopen_duckdb", "clear_llm_cache",'
        ' "remove_temp_files", "rotate_logs", "collect_garbage", "restart_ollama",'
        ' "terminate_stuck_workers", "replay_dead_letters", "pause_stages",'
        ' "escalate"]\n',
    )
    clock = FakeClock()
    application = make_app(monkeypatch, clock, BIOMEM_CONFIG_FILE=str(path))
    orchestrator = Orchestrator(application)
    orchestrator.start(initial_pass=False)
    log = LogFile(tmp_path / "biomem.log")
    escalator = RecordingEscalator()
    processes = ProcessRegistry(temp_dir=own_temp_dir(application.store.path.parent), clock=clock)
    try:
        application.llm_cache.put_text("k", "answer")
        _plant_temp_files(application)
        application.store.execute("CREATE TABLE scratch AS SELECT * FROM range(500)")
        application.store.execute("CREATE TEMP TABLE marker (n INTEGER)")
        application.dlq.base_delay_s = 0.0
        application.dlq.put(
            "writeback", {}, ConnectionError("down"), idempotency_key="wb", component="postgresql"
        )
        log.write("a line")
        engine = build_engine(
            application, ScriptedSignals(), clock, application.settings.recovery.active_rules(),
            actions=build_actions(), orchestrator=orchestrator, log_file=log, escalator=escalator,
            processes=processes,
        )  # fmt: skip
        worker = processes.spawn(
            [sys.executable, "-c", "import time; time.sleep(60)"], purpose="w", deadline_s=1
        )
        clock.advance(5)
        schedules = orchestrator.scheduled_stages()
        before, wal_before = _state(application, tmp_path, log, worker.pid), _wal(application)
        records = engine.run_rule("everything", dry_run=True)
        after = _state(application, tmp_path, log, worker.pid)
        assert after == before
        assert _wal(application) >= wal_before > 0  # not checkpointed
        assert orchestrator.scheduled_stages() == schedules
        assert escalator.calls == []
        assert [r.reason for r in records] == ["dry_run"] * 11
        rendered = {r.action: r for r in records}
        assert rendered["restart_ollama"].arguments["argv"] == argv
        assert rendered["terminate_stuck_workers"].arguments["pids"] == [worker.pid]
        assert rendered["pause_stages"].arguments["stages"][0] == "ingest"
        assert rendered["remove_temp_files"].arguments["file_count"] == 3
        assert rendered["clear_llm_cache"].arguments["entries"] == 1
    finally:
        orchestrator.stop()
        processes.close(grace_s=1.0)
        log.close()
        application.close()


def test_recovery_does_not_queue_behind_a_long_store_transaction(app: App) -> None:
    """While a stage holds the store, the engine still decides; its audit is written later."""
    import threading

    holding, release = threading.Event(), threading.Event()

    def long_stage() -> None:
        with app.store.transaction():
            holding.set()
            release.wait(60)

    clock = FakeClock()
    signals = ScriptedSignals()
    engine = build_engine(app, signals, clock, [rule(actions=["clear_llm_cache"])])
    stage = threading.Thread(target=long_stage)
    stage.start()
    assert holding.wait(10)
    signals.check(postgresql=Status.UNHEALTHY)
    done: list[Any] = []
    evaluation = threading.Thread(target=lambda: done.append(engine.tick()))
    try:
        evaluation.start()
        evaluation.join(20)
        assert not evaluation.is_alive(), "the engine waited for the stage's transaction"
        assert outcomes(done[0]) == [("clear_llm_cache", "done", None)]
    finally:
        release.set()
        stage.join(10)
    engine.tick()  # cooling down now; the earlier decision is written with this one
    rows = RecoveryAudit(app.store).history(rule="pg")
    assert [r["outcome"] for r in rows] == ["skipped", "done"]
