"""Checks of the PostgreSQL test fixtures and the throwaway cluster helper."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pg_fixtures import mask_password, reset_schemas, with_dbname
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def _public_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def _schema_exists(url: str, schema: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
        ).fetchone()
    return bool(row and row[0])


def _connects(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def test_per_run_database_is_reachable_and_dedicated(pg_database_url: str) -> None:
    """The per-run database accepts connections and is neither `postgres` nor `test`."""
    with psycopg.connect(pg_database_url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    name = row[0]
    assert name not in {"postgres", "test"}
    assert name.startswith("biomem_test_")


def test_clean_url_gives_empty_public_schema(pg_clean_url: str) -> None:
    """`pg_clean_url` yields an empty `public` schema and no `dreams` schema, and resets them."""
    assert _public_tables(pg_clean_url) == []
    assert not _schema_exists(pg_clean_url, "dreams")

    with psycopg.connect(pg_clean_url) as conn:
        conn.execute("CREATE TABLE public.leftover (id int)")
        conn.execute("CREATE SCHEMA dreams")
        conn.execute("CREATE TABLE dreams.leftover (id int)")
    reset_schemas(pg_clean_url)

    assert _public_tables(pg_clean_url) == []
    assert not _schema_exists(pg_clean_url, "dreams")
    # The re-created schema must be usable as before.
    with psycopg.connect(pg_clean_url) as conn:
        conn.execute("CREATE TABLE fresh (id int)")
        conn.rollback()


def test_pg_cluster_can_be_stopped_and_started(pg_cluster: PgCluster) -> None:
    """A throwaway cluster refuses connections once stopped and accepts them after start."""
    url = pg_cluster.url()
    assert _connects(url)

    pg_cluster.stop()
    assert not pg_cluster.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    pg_cluster.start()
    assert pg_cluster.is_running()
    assert _connects(url)


def test_pg_cluster_recovers_after_kill(pg_cluster: PgCluster) -> None:
    """After SIGKILL of the postmaster, `start()` brings the cluster back with committed data."""
    url = pg_cluster.url()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE survivors (id int)")
        conn.execute("INSERT INTO survivors VALUES (1)")

    pg_cluster.kill()
    assert not pg_cluster.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    pg_cluster.start()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM survivors").fetchone()
    assert row == (1,)


def test_pg_cluster_restart_keeps_port(pg_cluster: PgCluster) -> None:
    """`restart()` brings the server back on the same URL."""
    url = pg_cluster.url()
    pg_cluster.restart()
    assert pg_cluster.url() == url
    assert _connects(url)


def test_mask_password_hides_secrets() -> None:
    """Passwords vanish from URLs and key=value strings while the rest stays readable."""
    assert mask_password("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_password("postgresql://u@h/db?password=s3cret&sslmode=disable") == (
        "postgresql://u@h/db?password=***&sslmode=disable"
    )
    assert mask_password("host=h password=s3cret user=u") == "host=h password=*** user=u"
    assert mask_password("postgresql://postgres@127.0.0.1:5432/postgres") == (
        "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def test_with_dbname_replaces_only_the_database() -> None:
    """`with_dbname` swaps the database and keeps credentials, host and options."""
    assert with_dbname("postgresql://u:p@h:5/old?sslmode=disable&dbname=x", "new") == (
        "postgresql://u:p@h:5/new?sslmode=disable"
    )
    assert with_dbname("postgresql://u@h", "new") == "postgresql://u@h/new"
