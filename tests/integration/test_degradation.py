"""Degradation and recovery through the real policies: PostgreSQL and Ollama outages."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.orchestrator import Orchestrator
from biomem.pipeline.runner import StageOutcome
from biomem.resilience.breaker import BreakerState
from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import DeadLetterStatus
from biomem.store.runs import RunStatus
from tests.conftest import run_cli
from tests.fakes.ollama import FakeOllama
from tests.fakes.proxy import FaultProxy
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 11, 16, tzinfo=UTC)


def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
        time.sleep(0.02)


def memories_table(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.memories (id int PRIMARY KEY, content text,"
            " created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, metadata jsonb)"
        )
        conn.execute(
            "INSERT INTO public.memories SELECT g, 'memory number ' || g,"
            " timestamptz '2026-10-05' + g * interval '1 minute', now(), '{}'"
            " FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
            [rows],
        )


@pytest.fixture
def app_on(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[list[App]]:
    opened: list[App] = []
    yield opened
    for application in opened:
        application.close()


def open_with(
    monkeypatch: pytest.MonkeyPatch, opened: list[App], clock: FakeClock | None = None, **env: str
) -> App:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    application = open_app(load_settings(), clock=clock or FakeClock())
    opened.append(application)
    return application


def test_postgres_outage_becomes_dead_letters_then_recovers(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch, app_on: list[App], tmp_path: object
) -> None:
    """With PostgreSQL down, ingest and writeback wait as dead letters; once it is back,
    replay re-runs them and everything arrives."""
    url = pg_cluster.url()
    memories_table(url, 40)
    config = f"{tmp_path}/biomem.toml"
    with open(config, "w", encoding="utf-8") as handle:
        # Quick to give up while PostgreSQL is down, quick to try again after.
        handle.write(
            "[resilience.postgresql]\nmax_attempts = 1\nminimum_calls = 2\nwindow_size = 4\n"
            "open_seconds = 0.5\nopen_multiplier = 1.0\n"
        )
    clock = FakeClock()
    application = open_with(
        monkeypatch,
        app_on,
        clock,
        POSTGRES_DB_URL=url,
        OLLAMA_URL="http://127.0.0.1:1",
        BIOMEM_CONFIG_FILE=config,
    )
    orchestrator = Orchestrator(application, stop=threading.Event())
    pg_cluster.stop()
    outcomes = {o.stage: o for o in orchestrator.run_pass(as_of=AS_OF)}
    assert outcomes["ingest"].status == RunStatus.FAILED
    assert outcomes["writeback"].status == RunStatus.DEFERRED
    assert outcomes["short_term"].status == RunStatus.SUCCEEDED  # the rest goes on
    letters = {letter.operation: letter for letter in application.dlq.list()}
    assert set(letters) == {"ingest_postgres", "writeback"}
    assert all(letter.status is DeadLetterStatus.PENDING for letter in letters.values())
    assert "@" not in json.dumps([letter.message for letter in letters.values()])  # no URL
    pg_cluster.start()
    assert not application.is_healthy("postgresql")  # the breaker is open: letters wait
    clock.advance(1.0)  # past the open period: the breaker lets a trial call through
    report = application.dlq.replay(None)  # what the scheduled job does once due
    assert set(report.recovered) == {letter.id for letter in letters.values()}
    assert application.store.execute("SELECT count(*) FROM memories") == [(40,)]
    with psycopg.connect(url) as conn:
        sent = conn.execute("SELECT count(*) FROM dreams.runs").fetchone()
    assert sent is not None and sent[0] > 0


def test_ollama_outage_opens_the_breaker_and_falls_back_fast(
    monkeypatch: pytest.MonkeyPatch, app_on: list[App], fake_ollama: FakeOllama
) -> None:
    """Ollama answering 503 trips its breaker: the stage finishes on the fallback, and the
    next run does not call Ollama at all while the breaker is open."""
    assert (
        run_cli(
            "ingest",
            "-",
            input_bytes=b"".join(
                json.dumps(
                    {
                        "id": f"m{i}",
                        "content": f"memory {i} about Atlas",
                        "created_at": "2026-10-05T09:00:00Z",
                    }
                ).encode()
                + b"\n"
                for i in range(30)
            ),
        ).returncode
        == 0
    )
    application = open_with(monkeypatch, app_on, OLLAMA_URL=fake_ollama.url)
    fake_ollama.fail_with(503, paths=["/api/chat"])
    orchestrator = Orchestrator(application, stop=threading.Event())
    first = {o.stage: o for o in orchestrator.run_pass(["short_term"], as_of=AS_OF)}
    assert first["short_term"].result.fallback == 30
    assert application.guards.ollama.breaker.state is BreakerState.OPEN
    kinds = {event.kind.value for event in application.guards.errors.recent()}
    assert "service_unavailable" in kinds
    before = fake_ollama.request_count()
    fake_ollama.reset_faults()
    orchestrator.run_pass(["short_term"], as_of=AS_OF)
    assert fake_ollama.request_count() == before  # refused by the open breaker, no traffic


def test_local_stages_run_while_postgres_is_partitioned(
    pg_clean_url: str, monkeypatch: pytest.MonkeyPatch, app_on: list[App], tmp_path: object
) -> None:
    """While a partition keeps an ingest and a writeback waiting on PostgreSQL, a pass of the
    DuckDB-only stages runs and finishes beside them; after the heal both complete."""
    memories_table(pg_clean_url, 30)
    parts = urlsplit(pg_clean_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = FaultProxy(parts.hostname, parts.port).start()
    try:
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        config = f"{tmp_path}/biomem.toml"
        with open(config, "w", encoding="utf-8") as handle:
            # Deadlines far longer than the test: the PostgreSQL work stays waiting until the
            # heal, so whatever waited behind it would still be waiting too.
            handle.write(
                "[resilience.postgresql]\nconnect_timeout_seconds = 300\n"
                "statement_timeout_seconds = 300\ncall_timeout_seconds = 310\n"
                "acquire_timeout_seconds = 300\n"
            )
        application = open_with(
            monkeypatch,
            app_on,
            POSTGRES_DB_URL=urlunsplit(parts._replace(netloc=netloc)),
            OLLAMA_URL="http://127.0.0.1:1",
            BIOMEM_CONFIG_FILE=config,
        )
        orchestrator = Orchestrator(application, stop=threading.Event())
        first = {o.stage: o for o in orchestrator.run_pass(as_of=AS_OF)}
        assert first["ingest"].status == RunStatus.SUCCEEDED
        assert first["writeback"].status == RunStatus.SUCCEEDED
        memories_table(pg_clean_url, 60)  # 30 more for the ingest held by the partition
        proxy.blackhole()
        remote: dict[str, list[object]] = {"ingest": [], "writeback": []}
        waiting = [
            threading.Thread(
                target=lambda: remote["ingest"].append(orchestrator.run_pass(["writeback"])),
                daemon=True,
            ),
            threading.Thread(
                target=lambda: remote["writeback"].append(
                    orchestrator.run_pass(["writeback"], ingest=False)
                ),
                daemon=True,
            ),
        ]
        for thread in waiting:
            thread.start()
        wait_until(
            lambda: {r.stage for r in orchestrator.active_runs()} >= {"ingest", "writeback"},
            what="an ingest and a writeback under way",
        )
        local: list[list[StageOutcome]] = []
        beside = threading.Thread(
            target=lambda: local.append(
                orchestrator.run_pass(["working_memory", "homeostasis"], ingest=False, as_of=AS_OF)
            ),
            daemon=True,
        )
        beside.start()
        beside.join(60)
        assert not beside.is_alive(), "the DuckDB-only stages waited behind PostgreSQL"
        assert all(o.status == RunStatus.SUCCEEDED for o in local[0]), local
        assert all(thread.is_alive() for thread in waiting), "PostgreSQL answered: no partition"
        proxy.heal()
        for thread in waiting:
            thread.join(60)
            assert not thread.is_alive()
        assert application.store.execute("SELECT count(*) FROM memories") == [(60,)]
        assert not application.dlq.list()  # nothing failed: the work only waited
    finally:
        proxy.stop()
