"""Incremental ingest from a real PostgreSQL by (updated_at, id) watermark."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from biomem.clients.postgres import PostgresClient
from biomem.config import IngestSettings, PostgresSourceSettings
from biomem.ingest import PostgresSource, ingest_postgres, read_watermark
from biomem.store import DuckDBStore
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE public.memories (
    id bigserial PRIMARY KEY,
    content text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    metadata jsonb
);
CREATE INDEX ON public.memories (updated_at, id);
"""


def insert(url: str, rows: list[tuple[object, ...]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO public.memories (content, created_at, updated_at, metadata)"
            " VALUES (%s, %s::timestamptz, %s::timestamptz, %s::jsonb)",
            rows,
        )


@pytest.fixture
def pg(pg_clean_url: str) -> Iterator[str]:
    with psycopg.connect(pg_clean_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    yield pg_clean_url


@pytest.fixture
def client(pg: str) -> Iterator[PostgresClient]:
    with PostgresClient(SecretStr(pg)) as c:
        yield c


def source_for(client: PostgresClient, **columns: str) -> PostgresSource:
    return PostgresSource(client, PostgresSourceSettings(**columns))


def many(n: int, start: int = 0) -> list[tuple[object, ...]]:
    return [
        (
            f"memory {i}",
            f"2026-10-05 09:{i % 60:02d}:00+00",
            f"2026-10-05 10:00:{i % 60:02d}+00",
            json.dumps({"n": i}),
        )
        for i in range(start, start + n)
    ]


def test_ingest_reads_everything_in_batches_and_stores_watermark(
    client: PostgresClient, pg: str, store: DuckDBStore
) -> None:
    """All rows arrive over several batches and the watermark is the last (updated_at, id)."""
    insert(pg, many(25))
    source = source_for(client)
    got = ingest_postgres(store, source, settings=IngestSettings(batch_size=7))
    assert (got.ingested, got.quarantined) == (25, 0)
    assert store.execute("SELECT count(*), count(DISTINCT uid) FROM memories") == [(25, 25)]
    with psycopg.connect(pg) as conn:
        last = conn.execute(
            "SELECT updated_at, id FROM public.memories ORDER BY updated_at DESC, id DESC LIMIT 1"
        ).fetchone()
    assert last is not None
    mark = read_watermark(store, source.name)
    assert mark is not None and (mark.updated_at, mark.last_id) == (last[0], str(last[1]))
    again = ingest_postgres(store, source, settings=IngestSettings(batch_size=7))
    assert again.good == 0  # nothing past the watermark is read again


def test_updates_and_new_rows_are_picked_up(
    client: PostgresClient, pg: str, store: DuckDBStore
) -> None:
    """Rows updated after the last run update their memory and mark it; new rows are added."""
    insert(pg, many(10))
    source = source_for(client)
    ingest_postgres(store, source, settings=IngestSettings(batch_size=4))
    store.execute("UPDATE memories SET needs_recompute = false")
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(
            "UPDATE public.memories SET content = content || ' (edited)', updated_at = now()"
            " WHERE id IN (2, 5)"
        )
        conn.execute("UPDATE public.memories SET updated_at = now() WHERE id = 7")  # touch only
    insert(pg, many(1, start=100))
    got = ingest_postgres(store, source, settings=IngestSettings(batch_size=4))
    assert (got.ingested, got.updated, got.unchanged) == (1, 2, 1)
    marked = store.execute(
        "SELECT source_id, revision FROM memories WHERE needs_recompute ORDER BY source_id"
    )
    assert marked == [("11", 1), ("2", 2), ("5", 2)]
    assert store.execute("SELECT content FROM memories WHERE source_id = '2'") == [
        ("memory 1 (edited)",)
    ]


def test_bad_rows_are_quarantined_and_passed(
    client: PostgresClient, pg: str, store: DuckDBStore
) -> None:
    """Bad rows are quarantined with their id and reason; the watermark moves past them."""
    insert(
        pg,
        [
            ("fine", "2026-10-05 09:00+00", "2026-10-05 09:00+00", "{}"),
            (None, "2026-10-05 09:01+00", "2026-10-05 09:01+00", "{}"),
            ("x" * 70000, "2026-10-05 09:02+00", "2026-10-05 09:02+00", "{}"),
            ("list meta", "2026-10-05 09:03+00", "2026-10-05 09:03+00", "[1, 2]"),
            ("   ", "2026-10-05 09:04+00", "2026-10-05 09:04+00", None),
        ],
    )
    source = source_for(client)
    got = ingest_postgres(store, source, settings=IngestSettings(batch_size=2))
    assert (got.ingested, got.quarantined) == (1, 4)
    rows = store.execute("SELECT location, record_id, reason FROM quarantine ORDER BY record_id")
    assert [r[1] for r in rows] == ["2", "3", "4", "5"]
    assert rows[0] == ("postgres:public.memories id=2", "2", "no content")
    assert "over the limit" in rows[1][2]
    assert rows[2][2] == "metadata is list, not an object"
    assert ingest_postgres(store, source, settings=IngestSettings()).quarantined == 0


def test_interrupted_ingest_resumes_without_duplicates(
    client: PostgresClient, pg: str, store: DuckDBStore
) -> None:
    """An ingest stopped after one batch resumes where it stopped, with no row twice."""
    insert(pg, many(20))
    source = source_for(client)
    first = ingest_postgres(store, source, settings=IngestSettings(batch_size=6), max_batches=1)
    assert first.ingested == 6
    rest = ingest_postgres(store, source, settings=IngestSettings(batch_size=6))
    assert rest.ingested == 14 and rest.unchanged == 0
    assert store.execute("SELECT count(*) FROM memories") == [(20,)]


def test_nullable_updated_at_falls_back_to_created_at(pg: str, store: DuckDBStore) -> None:
    """Rows with NULL updated_at (a nullable column) are still read, ordered by created_at."""
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.memories ALTER COLUMN updated_at DROP NOT NULL")
        conn.execute(
            "INSERT INTO public.memories (content, created_at, updated_at) VALUES"
            " ('a', '2026-10-05 09:00+00', NULL), ('b', '2026-10-05 09:01+00', NULL)"
        )
    with PostgresClient(SecretStr(pg)) as client:
        got = ingest_postgres(store, source_for(client), settings=IngestSettings(batch_size=1))
    assert got.ingested == 2


def test_cli_ingest_with_custom_table_and_columns(
    pg: str, tmp_path: Path, store_path: Path
) -> None:
    """`biomem ingest --postgres` reads a table and columns named in the TOML file."""
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA app; CREATE TABLE app.notes (note_id text PRIMARY KEY, body text,"
            " made timestamp NOT NULL, changed timestamp NOT NULL, extra json)"
        )
        conn.execute(
            "INSERT INTO app.notes VALUES ('n-1', 'from a custom table', '2026-10-05 09:00',"
            " '2026-10-05 09:00', '{\"k\": 1}'), ('n-2', 'second', '2026-10-05 09:00',"
            " '2026-10-05 09:00', NULL)"
        )
    config = tmp_path / "biomem.toml"
    config.write_text(
        '[ingest.postgres]\ntable = "app.notes"\nid_column = "note_id"\ncontent_column = "body"\n'
        'created_at_column = "made"\nupdated_at_column = "changed"\nmetadata_column = "extra"\n'
    )
    env = {"POSTGRES_DB_URL": pg, "BIOMEM_CONFIG_FILE": str(config)}
    result = run_cli("ingest", "--postgres", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ingested"] == 2
    with DuckDBStore.open(store_path) as store:
        rows = store.execute(
            "SELECT uid, content, metadata::VARCHAR, created_at FROM memories ORDER BY uid"
        )
        runs = store.execute("SELECT stage, status FROM runs")
    assert rows[0][:3] == ("postgres:n-1", "from a custom table", '{"k":1}')
    assert rows[0][3].utcoffset().total_seconds() == 0 and rows[0][3].hour == 9
    assert runs == [("ingest", "succeeded")]


def test_unreachable_postgres_is_one_line_without_password() -> None:
    """With PostgreSQL unreachable, ingest fails in one line that holds no password."""
    env = {"POSTGRES_DB_URL": "postgresql://app:pw-Secret-1@127.0.0.1:1/db"}
    result = run_cli("ingest", "--postgres", env=env, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("biomem: postgresql:")
    assert "pw-Secret-1" not in result.stderr and "Traceback" not in result.stderr


def test_integer_ids_sharing_updated_at_are_all_read_across_batches(
    client: PostgresClient, pg: str, store: DuckDBStore
) -> None:
    """Rows written in one transaction share updated_at; their integer ids (1..120) must be
    read in numeric order across batches, or a batch ending at "100" skips 11..99."""
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.memories (id, content, created_at, updated_at, metadata)"
            " SELECT g, 'memory ' || g, now(), now(), '{}' FROM generate_series(1, 120) g"
        )
    got = ingest_postgres(store, source_for(client), settings=IngestSettings(batch_size=7))
    assert got.ingested == 120
    assert store.execute("SELECT count(*) FROM memories") == [(120,)]
