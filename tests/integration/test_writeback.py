"""Writeback to a real PostgreSQL: schema `dreams` created, idempotent, deferred while down."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest
from pydantic import SecretStr

from biomem.clients.postgres import PostgresClient
from biomem.config import IngestSettings, load_settings
from biomem.ingest import ingest_jsonl
from biomem.pipeline.runner import STAGES, run_stage, run_stages
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus
from tests.conftest import SAMPLES
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 11, 16, tzinfo=UTC)
TABLES = ("episodes", "memories", "associations", "semantic_neighbours", "dreams", "runs")


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM dreams.{t}").fetchone()[0]  # type: ignore[index]
            for t in TABLES
        }


def prepared(store: DuckDBStore) -> None:
    with SAMPLES.open("rb") as stream:
        ingest_jsonl(store, stream, location="samples", settings=IngestSettings())
    run_stages(store, load_settings(), [], as_of=AS_OF, ollama=None, stop=threading.Event())


def writeback(store: DuckDBStore, client: PostgresClient) -> RunStatus | str:
    return run_stage(
        store,
        load_settings(),
        STAGES["writeback"],
        as_of=AS_OF,
        ollama=None,
        stop=threading.Event(),
        postgres=client,
    ).status


def test_results_are_upserted_idempotently(store: DuckDBStore, pg_clean_url: str) -> None:
    """A writeback creates schema dreams with every result table; a second one changes nothing."""
    prepared(store)
    with PostgresClient(SecretStr(pg_clean_url)) as client:
        assert writeback(store, client) == RunStatus.SUCCEEDED
        first = counts(pg_clean_url)
        assert (
            first["memories"] == 600 and first["episodes"] > 0 and first["semantic_neighbours"] > 0
        )
        with psycopg.connect(pg_clean_url) as conn:
            before = conn.execute(
                "SELECT xmin::text FROM dreams.memories ORDER BY 1 LIMIT 5"
            ).fetchall()
        assert writeback(store, client) == RunStatus.SUCCEEDED
        with psycopg.connect(pg_clean_url) as conn:
            after = conn.execute(
                "SELECT xmin::text FROM dreams.memories ORDER BY 1 LIMIT 5"
            ).fetchall()
    assert before == after  # unchanged rows were not rewritten
    second = counts(pg_clean_url)
    assert {k: v for k, v in second.items() if k != "runs"} == {
        k: v for k, v in first.items() if k != "runs"
    }
    with psycopg.connect(pg_clean_url) as conn:
        row = conn.execute(
            "SELECT goal, fate, strength FROM dreams.memories WHERE memory_uid = 'jsonl:mem-00001'"
        ).fetchone()
    assert row is not None and row[0] and row[1] and 0 <= row[2] <= 1


def test_writeback_waits_while_postgres_is_down(store: DuckDBStore, pg_cluster: PgCluster) -> None:
    """PostgreSQL down: the run is deferred, nothing lost; back up: everything goes out."""
    prepared(store)
    url = pg_cluster.url()
    with PostgresClient(SecretStr(url), acquire_timeout_s=2) as client:
        pg_cluster.stop()
        assert writeback(store, client) == RunStatus.DEFERRED
        pg_cluster.start()
        assert writeback(store, client) == RunStatus.SUCCEEDED
    assert counts(url)["memories"] == 600
