"""PostgreSQL: every backend of the pool terminated → the rule resets the pool → the pipeline's
next call succeeds on fresh connections (a real server)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest

from biomem.app import App
from biomem.health.model import Status
from biomem.ingest import PostgresSource
from biomem.orchestrator import run_postgres_ingest
from biomem.recovery import RecoveryAudit, build_actions
from biomem.resilience.clock import FakeClock
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
