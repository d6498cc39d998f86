"""Crash safety: `biomem run --once` SIGKILLed mid-stage and run again ends exactly as an
uninterrupted run does, row for row."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import SAMPLES, cli_env, run_cli
from tests.fakes.ollama import FakeOllama

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AS_OF = "2026-11-16T00:00:00+00:00"
COMPARED = {
    "memories": "SELECT * EXCLUDE (first_ingested_at, last_ingested_at) FROM memories ORDER BY uid",
    "enrichments": "SELECT * FROM enrichments ORDER BY uid",
    "episodes": "SELECT * FROM episodes ORDER BY episode_id",
    "episode_members": "SELECT * FROM episode_members ORDER BY uid",
    "associations": "SELECT * FROM associations ORDER BY a, b",
    "memory_state": "SELECT * EXCLUDE (updated_at) FROM memory_state ORDER BY uid",
    "embeddings": "SELECT * FROM embeddings ORDER BY uid",
    "semantic_edges": "SELECT * FROM semantic_edges ORDER BY a, b",
    "dreams": "SELECT * FROM dreams ORDER BY dream_id",
    "pipeline_state": "SELECT key, value FROM pipeline_state ORDER BY key",
}


def outputs(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in COMPARED.items()}


@pytest.fixture
def subset(tmp_path: Path) -> Path:
    """The first 150 sample memories: enough for every stage, quick to run."""
    lines = SAMPLES.read_text(encoding="utf-8").splitlines(keepends=True)[:150]
    path = tmp_path / "subset.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Small batches, so that a kill lands between committed batches and inside one."""
    path = tmp_path / "biomem.toml"
    path.write_text(
        "[pipeline.short_term]\nbatch_size = 8\n[pipeline.long_term]\nbatch_size = 4\n"
        "[pipeline.dreams]\nper_run = 4\n"
    )
    return path


def env_for(store: Path, config: Path, ollama: FakeOllama) -> dict[str, str]:
    return {
        "DUCKDB_PATH": str(store),
        "BIOMEM_CONFIG_FILE": str(config),
        "OLLAMA_URL": ollama.url,
        "OLLAMA_MAX_CONCURRENCY": "4",
    }


def run_to_end(env: dict[str, str]) -> None:
    result = run_cli("run", "--once", "--as-of", AS_OF, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def kill_when(env: dict[str, str], ready: Callable[[], bool], timeout_s: float = 120) -> None:
    """Start `biomem run --once` and SIGKILL it as soon as ``ready()`` holds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run", "--once", "--as-of", AS_OF],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def slow_ollama() -> Any:
    server = FakeOllama()
    server.start()
    server.set_latency(0.03)
    try:
        yield server
    finally:
        server.stop()


def test_killed_runs_end_like_an_uninterrupted_run(
    tmp_path: Path, subset: Path, config: Path, slow_ollama: FakeOllama
) -> None:
    """SIGKILL mid-enrichment, mid-embedding and mid-dreams, then a rerun: same rows, none lost."""
    reference = tmp_path / "reference.duckdb"
    ref_env = env_for(reference, config, slow_ollama)
    assert run_cli("ingest", str(subset), env=ref_env).returncode == 0
    run_to_end(ref_env)
    expected = outputs(reference)
    assert len(expected["enrichments"]) == 150 and expected["semantic_edges"]

    crashed = tmp_path / "crashed.duckdb"
    env = env_for(crashed, config, slow_ollama)
    assert run_cli("ingest", str(subset), env=env).returncode == 0
    chat, embed = (
        (lambda: slow_ollama.request_count("/api/chat")),
        (lambda: slow_ollama.request_count("/api/embed")),
    )
    # The reference run already made requests: count from here.
    start_chat, start_embed = chat(), embed()
    # 1. Inside short-term enrichment, after a few batches committed.
    kill_when(env, lambda: chat() >= start_chat + 40)
    # 2. Inside long-term embedding (enrichment finished in the second attempt).
    kill_when(env, lambda: embed() >= start_embed + 5)
    # 3. Inside dreams: enrichment is complete, so new chat requests are dream requests.
    dreams_from = chat()
    kill_when(env, lambda: chat() > dreams_from)
    run_to_end(env)
    got = outputs(crashed)
    for table, rows in expected.items():
        assert got[table] == rows, f"{table} differs after the crashes"
    with duckdb.connect(str(crashed), read_only=True) as con:
        running = con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
    assert running is not None and running[0] >= 3  # each kill left its run visibly unfinished
