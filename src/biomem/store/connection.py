"""The embedded DuckDB store: one connection, one lock, errors translated once.

DuckDB allows one writing process per file; a second process gets a lock
error, which :func:`translate_errors` turns into :class:`StoreLockedError`
naming the file and the holder. Inside the process every statement runs
under one lock, so callers on several threads never interleave a
transaction: the lock is the store's bulkhead, one call at a time. With a
call timeout (``[resilience.duckdb] call_timeout_seconds``) a call holding the
lock too long is interrupted (:mod:`biomem.store.deadline`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import duckdb
import psutil

from biomem.logging import get_logger
from biomem.resilience.errors import (
    DatabaseQueryError,
    DatabaseUnavailable,
    DependencyError,
    StoreLockedError,
)
from biomem.resilience.policy import Policy
from biomem.resilience.redact import redact_text
from biomem.store.deadline import CallDeadline

__all__ = ["DuckDBStore", "classify_duckdb_error", "translate_errors"]

log = get_logger(__name__)

_LOCK_PID = re.compile(r"PID (\d+)")


def _classes(*names: str) -> tuple[type[duckdb.Error], ...]:
    # getattr: older DuckDB releases lack some of these names.
    found = (getattr(duckdb, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type))


# Checked along the exception's MRO, so the most specific class decides.
_TRANSIENT = _classes(
    "TransactionException",  # write-write conflict between transactions
    "IOException",  # disk full, file vanished, lock held
    "ConnectionException",
    "OutOfMemoryException",
    "InterruptException",
    "ResourceInUseException",
    "FatalException",  # the database must be reopened
    "InternalException",
    "InternalError",
)
_PERMANENT = _classes(
    "ParserException",
    "BinderException",
    "CatalogException",
    "ConstraintException",
    "ConversionException",
    "InvalidInputException",
    "InvalidTypeException",
    "TypeMismatchException",
    "OutOfRangeException",
    "SyntaxException",
    "DependencyException",
    "NotImplementedException",
    "PermissionException",
    "SequenceException",
    "SerializationException",
    "HTTPException",
    "ProgrammingError",
    "DataError",
    "IntegrityError",
    "NotSupportedError",
)


def classify_duckdb_error(exc: BaseException) -> type[DependencyError] | None:
    """Return the biomem error class for a DuckDB exception, or None if not DuckDB's."""
    if not isinstance(exc, duckdb.Error):
        return None
    for cls in type(exc).__mro__:
        if cls in _PERMANENT:
            return DatabaseQueryError
        if cls in _TRANSIENT:
            return DatabaseUnavailable
    # OperationalError, DatabaseError, the root Error: the store itself is in trouble.
    return DatabaseUnavailable


def _describe_holder(pid: int) -> str | None:
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return None
    # One line: an argument may hold newlines (python -c scripts).
    return redact_text(" ".join(cmdline.split()))[:160] or None


@contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Map DuckDB exceptions to biomem's at the boundary, ``raise ... from``."""
    try:
        yield
    except duckdb.Error as exc:
        message = str(exc)
        if isinstance(exc, duckdb.IOException) and "Could not set lock" in message:
            match = _LOCK_PID.search(message)
            pid = int(match.group(1)) if match else None
            holder = _describe_holder(pid) if pid is not None else None
            raise StoreLockedError(str(path), holder_pid=pid, holder=holder) from exc
        cls = classify_duckdb_error(exc) or DatabaseUnavailable
        raise cls("duckdb", f"{type(exc).__name__}: {redact_text(message)}") from exc


def memory_limit_mib() -> int:
    """DuckDB's memory limit for the store: a quarter of the machine's RAM, at least 1 GiB.

    DuckDB's own default is 80 % of RAM. A daemon that runs for months beside
    the user's other work should not take that much: past the limit DuckDB
    spills its sorts, joins and windows to the store's temporary directory
    (the long-term network on a million vectors wanted ~20 GB otherwise).
    """
    total = psutil.virtual_memory().total
    return max(1024, total // 4 // (1024 * 1024))


def _configure(connection: duckdb.DuckDBPyConnection) -> None:
    # Times come back in UTC whatever the machine's zone: output is the same everywhere.
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute(f"SET memory_limit = '{memory_limit_mib()}MiB'")


class DuckDBStore:
    """One DuckDB file, opened by this process for writing.

    Use :meth:`open`, then :meth:`transaction` or :meth:`execute`; close with
    :meth:`close` (or as a context manager).
    """

    # The store's bulkhead: one call at a time, behind one lock (see __init__).
    max_concurrent_calls = 1

    def __init__(
        self,
        path: Path,
        connection: duckdb.DuckDBPyConnection,
        *,
        policy: Policy | None = None,
        call_timeout_s: float | None = None,
    ) -> None:
        self.path = path
        self._con = connection
        self._policy = policy
        # One lock for the connection: DuckDB connections are not safe for
        # concurrent use, and a transaction must not interleave with others.
        # It is the store's bulkhead of one: callers queue for it.
        self._lock = threading.RLock()
        self._deadline = (
            CallDeadline(call_timeout_s, self.interrupt) if call_timeout_s is not None else None
        )
        self._closed = False
        # True between a failed reopen and the next successful one: the file is
        # not open, statements fail, health reports the store closed.
        self._lost = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        migrate: bool = True,
        policy: Policy | None = None,
        call_timeout_s: float | None = None,
    ) -> DuckDBStore:
        """Open (creating when missing) the store at ``path`` and apply pending migrations.

        With ``policy`` (the duckdb policy), single statements are retried when
        transient and every statement and transaction goes through its breaker.
        With ``call_timeout_s``, a call after the migrations (a statement, or a
        transaction block as a whole) holding the store longer is interrupted and fails with
        DatabaseUnavailable (:mod:`biomem.store.deadline`); None: no deadline.

        Raises:
            StoreLockedError: another process holds the file.
            DatabaseUnavailable: the file cannot be opened (permissions, corruption).
        """
        path = path.expanduser().resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                "duckdb", f"cannot create the directory of {path} ({exc.strerror})"
            ) from exc
        with translate_errors(path):
            connection = duckdb.connect(str(path))
            _configure(connection)
        # Private whatever the umask was when an older version created it.
        for private in (path, path.with_name(path.name + ".wal")):
            if private.exists():
                private.chmod(0o600)
        store = cls(path, connection, policy=policy)
        if migrate:
            # Local import: migrations import this module.
            from biomem.store.migrations import migrate as run_migrations

            try:
                run_migrations(store)
            except BaseException:
                store.close()
                raise
        # Only now: a migration rewriting a big store may take longer than any
        # call should, and interrupting it would keep biomem from ever starting.
        if call_timeout_s is not None:
            store._deadline = CallDeadline(call_timeout_s, store.interrupt)
        log.debug("store_opened", path=str(path))
        return store

    def close(self) -> None:
        """Close the connection (idempotent), releasing the file lock."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()
        if self._deadline is not None:
            self._deadline.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed or self._lost

    @property
    def call_timeout_s(self) -> float | None:
        """The deadline of each call, or None."""
        return self._deadline.timeout_s if self._deadline is not None else None

    @property
    def calls_timed_out(self) -> int:
        """Calls interrupted at their deadline since the store was opened."""
        return self._deadline.timed_out if self._deadline is not None else 0

    def _bounded(self) -> AbstractContextManager[None]:
        return self._deadline.bounded() if self._deadline is not None else nullcontext()

    @contextmanager
    def _held(self, timeout_s: float) -> Iterator[None]:
        self._locked(timeout_s, "start a transaction")
        try:
            yield
        finally:
            self._lock.release()

    def _locked(self, timeout_s: float, doing: str) -> None:
        # Recovery must not queue forever behind a stage's long transaction.
        if not self._lock.acquire(timeout=timeout_s):
            raise DatabaseUnavailable(
                "duckdb", f"store busy: cannot {doing} within {timeout_s:g} s"
            )

    def reopen(self, *, timeout_s: float = 10.0) -> None:
        """Close the connection and open the file again: a fresh DuckDB instance.

        What a connection left in a bad state (a fatal error, an invalidated
        database, a descriptor gone stale) is dropped with it. When the file
        cannot be opened again, the store stays closed (health reports it) until
        a later reopen succeeds.

        Raises:
            DatabaseUnavailable: the store is busy, was closed on purpose, or the
                file cannot be opened.
            StoreLockedError: another process took the file meanwhile.
        """
        self._locked(timeout_s, "reopen")
        try:
            if self._closed:
                raise DatabaseUnavailable("duckdb", "the store was closed")
            try:
                self._con.close()
            except duckdb.Error as exc:  # a broken connection may refuse even this
                log.warning("store_close_failed", error=redact_text(str(exc)))
            self._lost = True
            with translate_errors(self.path):
                connection = duckdb.connect(str(self.path))
                _configure(connection)
            self._con = connection
            self._lost = False
            log.info("store_reopened", path=str(self.path))
        finally:
            self._lock.release()

    def checkpoint(self, *, timeout_s: float = 30.0) -> int:
        """Write the WAL into the database file; return the WAL bytes it held before.

        Raises:
            DatabaseUnavailable: the store is busy or the checkpoint failed.
        """
        wal = self.path.with_name(self.path.name + ".wal")
        self._locked(timeout_s, "checkpoint")
        try:
            before = wal.stat().st_size if wal.exists() else 0
            with translate_errors(self.path):
                self._con.execute("CHECKPOINT")
            return before
        finally:
            self._lock.release()

    def interrupt(self) -> None:
        """Interrupt the statement running now, from any thread (it fails, rolled back)."""
        # No lock: the statement to interrupt holds it.
        with contextlib.suppress(duckdb.Error):
            self._con.interrupt()

    def temp_directory(self, *, timeout_s: float = 2.0) -> Path | None:
        """Where DuckDB spills to disk (its temp_directory), or None when not on disk.

        Raises:
            DatabaseUnavailable: the store is busy or failing.
        """
        self._locked(timeout_s, "read the temp_directory")
        try:
            with translate_errors(self.path):
                row = self._con.execute("SELECT current_setting('temp_directory')").fetchone()
        finally:
            self._lock.release()
        return Path(str(row[0])) if row and row[0] else None

    @contextmanager
    def transaction(self, *, wait_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: committed on success, rolled back on error.

        Not retried (the block is the caller's); counted by the breaker. With
        ``wait_s``, a store busy that long raises DatabaseUnavailable instead of
        waiting (before the breaker: busy is not broken).
        """
        busy = nullcontext() if wait_s is None else self._held(wait_s)
        guard = self._policy.breaker if self._policy is not None else nullcontext()
        with busy, guard, self._lock, translate_errors(self.path):
            self._con.execute("BEGIN TRANSACTION")
            try:
                # The deadline ends before COMMIT or ROLLBACK: those must never be interrupted.
                with self._bounded():
                    yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            else:
                self._con.execute("COMMIT")

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction and return all its rows.

        A failed statement left nothing behind, so a transient failure is retried.
        """

        def once() -> list[tuple[Any, ...]]:
            with self._lock, translate_errors(self.path), self._bounded():
                return self._con.execute(sql, params).fetchall()

        return once() if self._policy is None else self._policy.call(once, operation="execute")

    def fetchone(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> tuple[Any, ...] | None:
        """Run one statement and return its first row, or None (retried like :meth:`execute`)."""

        def once() -> tuple[Any, ...] | None:
            with self._lock, translate_errors(self.path), self._bounded():
                return self._con.execute(sql, params).fetchone()

        return once() if self._policy is None else self._policy.call(once, operation="fetchone")
