"""Pytest fixtures for PostgreSQL-backed tests.

Load with ``pytest_plugins = ["tests.support.pg_fixtures"]`` in the top-level
conftest. The server is the one named by ``TEST_POSTGRES_URL`` or, when that
is unset, a throwaway cluster started for the session; each test run works in
its own freshly created database. Tests that stop or kill PostgreSQL use
``pg_cluster``, which is always a throwaway cluster, never the shared server.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support.pgcluster import PgCluster, PgClusterError, find_pg_bin_dir

__all__ = [
    "mask_password",
    "pg_clean_url",
    "pg_cluster",
    "pg_database_url",
    "pg_server_url",
    "reset_schemas",
    "with_dbname",
]

ENV_VAR: Final = "TEST_POSTGRES_URL"
NOT_INSTALLED_MESSAGE: Final = (
    "no PostgreSQL: set TEST_POSTGRES_URL or install postgresql (apt-get install postgresql)"
)

_URL_SCHEMES: Final = ("postgresql", "postgres")
# Schemas the application creates; dropped before every test using pg_clean_url.
_APP_SCHEMAS: Final = ("public", "dreams")
# A leaked connection holding a lock must make pg_clean_url fail, not hang.
_RESET_LOCK_TIMEOUT: Final = "10s"


def mask_password(url: str) -> str:
    """Hide the password in a libpq URL or key=value connection string.

    Args:
        url: A ``postgresql://`` URL or a ``key=value`` conninfo string.

    Returns:
        The same string with any password replaced by ``***``.
    """
    if urlsplit(url).scheme in _URL_SCHEMES:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hosts = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hosts}"
        query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def with_dbname(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` instead.

    Args:
        url: A ``postgresql://`` URL or a ``key=value`` conninfo string.
        dbname: The database name (must not need URL escaping).

    Returns:
        A URL if ``url`` was one (query parameters kept, any ``dbname=``
        parameter removed since it would override the path), else a conninfo.
    """
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        return make_conninfo(url, dbname=dbname)
    # Keep the other parameters byte-for-byte rather than re-encoding them.
    params = [p for p in parts.query.split("&") if p and not p.startswith("dbname=")]
    return urlunsplit(parts._replace(path=f"/{dbname}", query="&".join(params)))


def reset_schemas(url: str) -> None:
    """Drop the application schemas and re-create an empty ``public``.

    Runs in one transaction, so a failure leaves the database as it was.

    Args:
        url: Connection URL of the database to reset.
    """
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_RESET_LOCK_TIMEOUT))
        )
        for schema in _APP_SCHEMAS:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("CREATE SCHEMA public")
        # Match a freshly created database: PostgreSQL 15+ makes the database
        # owner own public (14+ has the role) and lets everybody use it.
        if conn.info.server_version >= 140000:
            conn.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
        conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    # Leaving the `with` block commits.


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The helpers below return an error message instead of calling pytest.fail
# inside their `except` blocks, so that the failure report is just our line
# and not also the chained exception it was raised while handling.


def _unreachable_reason(url: str) -> str | None:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"{ENV_VAR}={mask_password(url)} is not reachable: {_first_line(exc)}"
    return None


def _start_session_cluster() -> PgCluster | str:
    try:
        cluster = PgCluster()
    except PgClusterError as exc:
        return f"cannot run a throwaway PostgreSQL cluster: {exc}"
    try:
        cluster.start()
    except PgClusterError as exc:
        cluster.cleanup()
        return f"could not start a throwaway PostgreSQL cluster: {exc}"
    return cluster


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the PostgreSQL server for this run (TEST_POSTGRES_URL or throwaway)."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        problem = _unreachable_reason(configured)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        yield configured
        return

    if find_pg_bin_dir() is None:
        pytest.fail(NOT_INSTALLED_MESSAGE, pytrace=False)
    cluster = _start_session_cluster()
    if isinstance(cluster, str):
        pytest.fail(cluster, pytrace=False)
    try:
        yield cluster.url()
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def pg_database_url(pg_server_url: str) -> Iterator[str]:
    """URL of a database created for this test run and dropped at its end."""
    # The pid keeps parallel runs (xdist workers, CI jobs sharing a server)
    # apart; the random part guards against pid reuse after a crashed run.
    name = f"biomem_test_{os.getpid()}_{secrets.token_hex(4)}"
    ident = sql.Identifier(name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        # template0 with a fixed encoding and locale gives the same database
        # on the shared server as on a throwaway cluster (initdb -E UTF8
        # --locale=C), whatever the server's defaults or template1 contain.
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'").format(
                ident
            )
        )
    try:
        yield with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            # FORCE (PostgreSQL 13+) ends connections a test leaked.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def pg_clean_url(pg_database_url: str) -> str:
    """URL of the per-run database with empty ``public`` and no ``dreams`` schema."""
    reset_schemas(pg_database_url)
    return pg_database_url


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started throwaway cluster that the test may stop, kill and restart."""
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "needs PostgreSQL server binaries (initdb, postgres) for a throwaway "
            "cluster: install postgresql (apt-get install postgresql)"
        )
    # Not tmp_path as base_dir: as root, the postgres OS user cannot traverse
    # pytest's 0700 temp directories; PgCluster makes its own under /tmp.
    with PgCluster(bin_dir=bin_dir) as cluster:
        yield cluster
