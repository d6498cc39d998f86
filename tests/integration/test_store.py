"""The embedded store: migrations, old files upgrading, the single-writer lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from biomem.resilience.errors import (
    DatabaseQueryError,
    DatabaseUnavailable,
    StoreLockedError,
)
from biomem.resilience.events import ErrorKind, classify
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


# -- the call deadline ([resilience.duckdb] call_timeout_seconds) ---------------------------

# A cross join DuckDB cannot finish in any test's lifetime (10^14 pairs, no match to stop at).
RUNAWAY = "SELECT count(*) FROM range(100000000) a, range(1000000) b WHERE a.range + b.range < 0"
DEADLINE_MESSAGE = (
    r"duckdb: call timed out after 0\.3 s and was interrupted "
    r"\(\[resilience\.duckdb\] call_timeout_seconds\)"
)


@pytest.fixture
def bounded_store(store_path: Path) -> Iterator[DuckDBStore]:
    """A store whose calls may take 0.3 s; a backstop interrupts after 60 s so that a broken
    deadline fails the test (with DuckDB's own message) instead of hanging it."""
    store = DuckDBStore.open(store_path, call_timeout_s=0.3)
    backstop = threading.Timer(60, store.interrupt)
    backstop.start()
    try:
        yield store
    finally:
        backstop.cancel()
        store.close()


def test_a_statement_past_the_deadline_is_interrupted_as_a_transient_timeout(
    bounded_store: DuckDBStore,
) -> None:
    """A runaway statement is interrupted at the deadline and fails as DatabaseUnavailable,
    classified a timeout; the store answers the next statement at once."""
    with pytest.raises(DatabaseUnavailable, match=DEADLINE_MESSAGE) as caught:
        bounded_store.execute(RUNAWAY)
    assert caught.value.transient
    assert isinstance(caught.value.__cause__, duckdb.InterruptException)
    assert classify(caught.value) is ErrorKind.TIMEOUT
    assert bounded_store.calls_timed_out == 1
    assert bounded_store.execute("SELECT 42") == [(42,)]
    assert bounded_store.fetchone("SELECT 43") == (43,)


def test_a_transaction_past_the_deadline_is_interrupted_and_rolled_back(
    bounded_store: DuckDBStore,
) -> None:
    """The deadline bounds a transaction block as a whole: its writes are rolled back."""
    insert = "INSERT INTO runs (stage, started_at, status) VALUES ('x', now(), 'running')"
    with (
        pytest.raises(DatabaseUnavailable, match=DEADLINE_MESSAGE),
        bounded_store.transaction() as con,
    ):
        con.execute(insert)
        con.execute(RUNAWAY).fetchall()
    assert bounded_store.execute("SELECT count(*) FROM runs") == [(0,)]
    with bounded_store.transaction() as con:  # the store is whole: a new transaction commits
        con.execute(insert)
    assert bounded_store.execute("SELECT count(*) FROM runs") == [(1,)]


def test_a_block_between_statements_at_the_deadline_cannot_start_another_unbounded(
    bounded_store: DuckDBStore,
) -> None:
    """A block busy in Python when the deadline passes has its next statement interrupted."""
    with (
        pytest.raises(DatabaseUnavailable, match=DEADLINE_MESSAGE),
        bounded_store.transaction() as con,
    ):
        con.execute("SELECT 1").fetchall()
        threading.Event().wait(0.5)  # past the deadline, no statement running
        con.execute(RUNAWAY).fetchall()
    assert bounded_store.calls_timed_out == 1


def test_calls_within_the_deadline_are_never_interrupted(bounded_store: DuckDBStore) -> None:
    """Quick calls, nested ones included, run as without a deadline; none is counted."""
    for n in range(200):
        assert bounded_store.execute("SELECT ?", [n]) == [(n,)]
        with bounded_store.transaction() as con:
            con.execute("SELECT 1").fetchall()
            assert bounded_store.fetchone("SELECT 2") == (2,)  # nested in the block
    assert bounded_store.calls_timed_out == 0
    assert bounded_store.call_timeout_s == 0.3


def test_without_a_deadline_recovery_can_still_interrupt(store: DuckDBStore) -> None:
    """With no deadline (the default), interrupt() still stops a statement, reported as such."""
    assert store.call_timeout_s is None
    timer = threading.Timer(0.3, store.interrupt)
    timer.start()
    try:
        with pytest.raises(DatabaseUnavailable, match="InterruptException"):
            store.execute(RUNAWAY)
    finally:
        timer.cancel()
    assert store.calls_timed_out == 0


def test_last_runs_show_a_long_run_when_it_finishes(store: DuckDBStore) -> None:
    """A run that finishes after many quick ones started is listed first, not pushed out."""
    from datetime import UTC, datetime, timedelta

    from biomem.store.runs import last_runs, record_run

    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    now = [t0]
    with record_run(store, "writeback", wall_clock=lambda: now[0]):
        for i in range(25):
            now[0] = t0 + timedelta(seconds=i + 1)
            with record_run(store, "working_memory", wall_clock=lambda: now[0]):
                pass
        now[0] = t0 + timedelta(seconds=30)
    listed = last_runs(store)
    assert len(listed) == 20
    assert (listed[0]["stage"], listed[0]["status"]) == ("writeback", "succeeded")
    assert [r["stage"] for r in listed[1:]] == ["working_memory"] * 19
