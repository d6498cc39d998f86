"""PostgreSQL: every backend of the pool terminated → the rule resets the pool → the pipeline's
next call succeeds on fresh connections (a real server); and the same rule firing by itself
from the live health monitor while a throwaway cluster is down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from biomem.app import App
from biomem.health.checks import build_checks
from biomem.health.model import Status
from biomem.health.monitor import HealthMonitor
from biomem.ingest import PostgresSource
from biomem.orchestrator import run_postgres_ingest
from biomem.recovery import RecoveryAudit, RecoveryService, build_actions
from biomem.resilience.clock import FakeClock
from tests.support.pgcluster import PgCluster
from tests.support.recovery import ScriptedSignals, build_engine, make_app, outcomes

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE public.memories (
    id bigserial PRIMARY KEY,
    content text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    metadata jsonb
);
INSERT INTO public.memories (content, created_at, updated_at, metadata)
SELECT 'memory ' || n, now() - interval '1 hour', now() - interval '1 hour', '{}'::jsonb
FROM generate_series(1, 20) AS n;
"""


@pytest.fixture
def app(pg_clean_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    with psycopg.connect(pg_clean_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    application = make_app(monkeypatch, FakeClock(), POSTGRES_DB_URL=pg_clean_url)
    try:
        yield application
    finally:
        application.close()


def _fill_pool(app: App, n: int) -> set[int]:
    """Borrow ``n`` connections at once (as concurrent work does) and give them back."""
    client = app.postgres
    assert client is not None
    pids = set()
    with contextlib.ExitStack() as stack:
        for _ in range(n):
            conn = stack.enter_context(client.connection())
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            pids.add(int(row[0]))
    return pids


def test_terminated_backends_reset_pool_and_next_ingest_succeeds(
    app: App, pg_clean_url: str
) -> None:
    """After pg_terminate_backend on all its backends, postgres_pool_reset replaces the pool."""
    client = app.postgres
    assert client is not None
    old_pids = _fill_pool(app, 3)
    assert client.get_stats()["pool_size"] == 3
    with psycopg.connect(pg_clean_url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)",
            [list(old_pids)],
        ).fetchall()
    assert ended == [(True,)] * 3

    clock = FakeClock()
    signals = ScriptedSignals()
    rules = [r for r in app.settings.recovery.active_rules() if r.name == "postgres_pool_reset"]
    engine = build_engine(app, signals, clock, rules, actions=build_actions())
    for _ in range(2):  # the monitor sees the failures; the rule waits for the third check
        signals.check(postgresql=Status.UNHEALTHY)
        assert engine.tick() == []
    signals.check(postgresql=Status.UNHEALTHY)
    (record,) = engine.tick()
    assert outcomes([record]) == [("reset_postgres_pool", "done", None)]
    assert record.detail["connections_closed"] == 3
    assert client.get_stats()["pool_size"] == 0  # nothing dead left to hand out

    # The pipeline's next call: an ingest pass from PostgreSQL, first time right.
    source = PostgresSource(client, app.settings.ingest.postgres)
    counts = run_postgres_ingest(app.store, source, app.settings)
    assert counts.ingested == 20
    stats = client.get_stats()
    assert stats.get("connections_lost", 0) == 0
    assert not _fill_pool(app, 1) & old_pids

    (row,) = RecoveryAudit(app.store).history(rule="postgres_pool_reset")
    assert row["outcome"] == "done" and "3 connection(s) closed" in row["summary"]
    assert pg_clean_url.split("@")[0] not in str(row)  # no credentials in the audit


def test_the_live_monitor_makes_the_pool_reset_fire_by_itself_during_an_outage(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch, fake_ollama: Any
) -> None:
    """PostgreSQL stopped: three real checks find it unhealthy, postgres_pool_reset fires with no
    one scripting it and resets the pool; PostgreSQL back: the next ingest succeeds, the incident
    closes, and the audit tells it."""
    url = pg_cluster.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    clock = FakeClock()
    app = make_app(monkeypatch, clock, POSTGRES_DB_URL=url, OLLAMA_URL=fake_ollama.url)
    try:
        old_pids = _fill_pool(app, 3)
        monitor = HealthMonitor(build_checks(app))
        service = RecoveryService(app, monitor, None, clock=clock)
        engine = service.engine

        def check_and_tick() -> list[Any]:
            asyncio.run(monitor.run_once())
            clock.advance(15)  # the monitor's interval passes between checks
            return [r for r in engine.tick() if r.rule == "postgres_pool_reset"]

        assert check_and_tick() == []
        assert monitor.snapshot().components["postgresql"].status is Status.HEALTHY

        pg_cluster.stop("fast")  # every backend ends, and nothing answers any more
        assert check_and_tick() == []
        assert check_and_tick() == []
        (reset,) = check_and_tick()
        assert monitor.snapshot().components["postgresql"].status.rank >= 3
        assert outcomes([reset]) == [("reset_postgres_pool", "done", None)]
        assert reset.phase == "act" and reset.trigger.startswith("postgresql ")
        assert reset.trigger.endswith(" for 3 check(s) in a row")
        incident = engine.state("postgres_pool_reset").incident_id
        assert incident is not None and reset.incident_id == incident

        pg_cluster.start()
        clock.advance(700)  # past the breaker's longest open wait: a trial call is let through
        client = app.postgres
        assert client is not None
        source = PostgresSource(client, app.settings.ingest.postgres)
        counts = run_postgres_ingest(app.store, source, app.settings)
        assert counts.ingested == 20
        assert not _fill_pool(app, 1) & old_pids  # fresh backends only

        assert check_and_tick() == []  # healthy again: the incident closes, nothing to do
        assert monitor.snapshot().components["postgresql"].status is Status.HEALTHY
        assert engine.state("postgres_pool_reset").incident_id is None
        service.stop()
        rows = RecoveryAudit(app.store).history(rule="postgres_pool_reset")
        assert [(r["action"], r["outcome"], r["phase"], r["incident_id"]) for r in rows] == [
            ("reset_postgres_pool", "done", "act", incident)
        ]
        assert rows[0]["trigger"] == reset.trigger
        assert "pool replaced" in rows[0]["summary"]
        saved = RecoveryAudit(app.store).load_states()["postgres_pool_reset"]
        assert len(saved.attempts) == 1 and saved.incident_id is None
    finally:
        app.close()
