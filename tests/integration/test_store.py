"""The embedded store: migrations, old files upgrading, the single-writer lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from biomem.resilience.errors import (
    DatabaseQueryError,
    DatabaseUnavailable,
    StoreLockedError,
)
from biomem.store import DuckDBStore, applied_versions, available_migrations, migrate
from biomem.store.connection import classify_duckdb_error
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def tables(store: DuckDBStore) -> set[str]:
    return {row[0] for row in store.execute("SELECT table_name FROM duckdb_tables()")}


def test_new_file_gets_every_migration(store_path: Path) -> None:
    """A new file is created with every migration applied and recorded."""
    with DuckDBStore.open(store_path) as store:
        assert set(applied_versions(store)) == {m.version for m in available_migrations()}
        assert {"memories", "quarantine", "ingest_watermarks", "runs"} <= tables(store)
        assert migrate(store) == []  # idempotent


def test_old_file_upgrades_itself_keeping_data(store_path: Path) -> None:
    """A file at schema version 1 with data upgrades on open and keeps its rows."""
    with DuckDBStore.open(store_path, migrate=False) as old:
        assert migrate(old, target=1) == [1]
        old.execute(
            "INSERT INTO memories VALUES ('jsonl:a', 'jsonl', 'a', 'kept', now(), now(), '{}',"
            " 'h', 1, true, now(), now())"
        )
        assert "runs" not in tables(old)
    with DuckDBStore.open(store_path) as store:
        assert max(applied_versions(store)) == len(available_migrations())
        assert "runs" in tables(store)
        assert store.execute("SELECT content FROM memories") == [("kept",)]


def test_file_from_newer_biomem_is_refused(store_path: Path) -> None:
    """A file recording a schema version this program does not know is refused, not used."""
    with DuckDBStore.open(store_path) as store:
        store.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x', now())")
    with pytest.raises(DatabaseUnavailable, match="schema version 999"):
        DuckDBStore.open(store_path)


def test_second_process_gets_clear_lock_error(store_path: Path) -> None:
    """While one process holds the store, another gets one line naming the file and holder."""
    store_path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(store_path)!r})
                sys.stdout.write("ready\\n"); sys.stdout.flush()
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        with pytest.raises(StoreLockedError) as caught:
            DuckDBStore.open(store_path)
        assert caught.value.holder_pid == holder.pid
        assert str(store_path) in str(caught.value)
        result = run_cli("quarantine", env={"DUCKDB_PATH": str(store_path)})
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"process {holder.pid}" in result.stderr and str(store_path) in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_every_duckdb_exception_is_classified() -> None:
    """Each exception class DuckDB defines maps to a transient or a permanent biomem error."""
    classes = [
        obj
        for obj in vars(duckdb).values()
        if isinstance(obj, type) and issubclass(obj, duckdb.Error)
    ]
    assert len(classes) > 20
    for cls in classes:
        assert classify_duckdb_error(cls("x")) in (DatabaseUnavailable, DatabaseQueryError), cls
    assert classify_duckdb_error(duckdb.TransactionException("x")) is DatabaseUnavailable
    assert classify_duckdb_error(duckdb.ParserException("x")) is DatabaseQueryError
    assert classify_duckdb_error(duckdb.ConstraintException("x")) is DatabaseQueryError
    assert classify_duckdb_error(ValueError("x")) is None


def test_query_errors_are_translated(store: DuckDBStore) -> None:
    """A bad statement surfaces as DatabaseQueryError, not a DuckDB exception."""
    with pytest.raises(DatabaseQueryError, match="ParserException"):
        store.execute("SELEC 1")


def test_transaction_rolls_back_on_error(store: DuckDBStore) -> None:
    """A failing block leaves nothing of its writes behind."""
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO runs (stage, started_at, status) VALUES ('x', now(), 'running')")
        raise RuntimeError("boom")
    assert store.execute("SELECT count(*) FROM runs") == [(0,)]


def test_store_files_are_private(tmp_path: Path) -> None:
    """The store and its write-ahead log are readable by their owner only (0600)."""
    store_path = tmp_path / "private" / "biomem.duckdb"
    result = run_cli(
        "ingest",
        "-",
        env={"DUCKDB_PATH": str(store_path)},
        input_bytes=b'{"id": "a", "content": "secret thoughts", "created_at": "2026-10-05"}\n',
    )
    assert result.returncode == 0, result.stderr
    files = [p for p in store_path.parent.iterdir() if p.name.startswith("biomem.duckdb")]
    assert files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path
