"""A stage made to hang (Ollama accepts the request and never answers) is cancelled by the
stage_stuck rule and rescheduled; once Ollama answers, the rescheduled run succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from biomem.health.monitor import HealthMonitor
from biomem.ingest import ingest_jsonl
from biomem.orchestrator import Orchestrator
from biomem.recovery import LiveSignals, ProcessRegistry, build_actions, own_temp_dir
from biomem.resilience.clock import FakeClock
from tests.conftest import SAMPLES
from tests.support.recovery import build_engine, make_app

pytestmark = pytest.mark.integration


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _runs(app: Any, stage: str) -> list[tuple[int, str]]:
    return [
        (int(i), str(s))
        for i, s in app.store.execute(
            "SELECT id, status FROM runs WHERE stage = ? ORDER BY id", [stage]
        )
    ]


def test_a_hung_stage_is_cancelled_and_rescheduled(
    monkeypatch: pytest.MonkeyPatch, fake_ollama: Any, tmp_path: Path
) -> None:
    """short_term waits on an LLM call that never ends → cancelled, run again, done."""
    config = tmp_path / "biomem.toml"
    config.write_text(
        "[recovery]\nreschedule_delay_seconds = 1\nstage_cancel_grace_seconds = 15\n",
        encoding="utf-8",
    )
    clock = FakeClock()
    app = make_app(
        monkeypatch,
        clock,
        OLLAMA_URL=fake_ollama.url,
        OLLAMA_TIMEOUT_SECONDS="600",  # the call would wait ten minutes on its own
        BIOMEM_CONFIG_FILE=str(config),
    )
    sample = b"".join(SAMPLES.read_bytes().splitlines(keepends=True)[:6])
    with (tmp_path / "six.jsonl").open("wb") as out:
        out.write(sample)
    with (tmp_path / "six.jsonl").open("rb") as stream:
        ingest_jsonl(app.store, stream, location="six.jsonl", settings=app.settings.ingest)
    fake_ollama.hang(paths=["/api/chat"])
    orchestrator = Orchestrator(app)
    orchestrator.start(initial_pass=False)
    processes = ProcessRegistry(temp_dir=own_temp_dir(app.store.path.parent), clock=clock)
    try:
        assert orchestrator.reschedule("short_term", 0) is not None  # run it now
        _wait_for("the LLM call to hang", lambda: fake_ollama.request_count("/api/chat") > 0)
        (running,) = orchestrator.active_runs()
        assert running.stage == "short_term"

        stuck = [r for r in app.settings.recovery.active_rules() if r.name == "stage_stuck"]
        signals = LiveSignals(
            app, HealthMonitor([]), orchestrator=orchestrator, processes=processes, clock=clock
        )
        engine = build_engine(
            app, signals, clock, stuck, actions=build_actions(), orchestrator=orchestrator
        )
        assert engine.tick() == []  # not stuck yet: it has only just started
        clock.advance(7200)  # the default stuck_seconds
        (record,) = engine.tick()
        assert (record.action, record.outcome) == ("cancel_stuck_stage", "done")
        assert record.arguments["stage"] == "short_term"
        assert record.detail["ended"] is True and record.detail["rescheduled_at"] is not None
        assert orchestrator.active_runs() == []
        assert _runs(app, "short_term")[-1][1] == "interrupted"

        fake_ollama.reset_faults()  # Ollama answers again
        _wait_for(
            "the rescheduled run to succeed",
            lambda: _runs(app, "short_term")[-1][1] == "succeeded",
        )
        assert [status for _, status in _runs(app, "short_term")] == ["interrupted", "succeeded"]
        enriched = app.store.fetchone("SELECT count(*) FROM enrichments WHERE source = 'llm'")
        assert enriched == (6,)
    finally:
        orchestrator.stop()
        processes.close()
        app.close()
