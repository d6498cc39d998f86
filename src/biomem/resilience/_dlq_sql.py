"""Dead letters and where they are kept: the record, the store protocol, DuckDB and PostgreSQL.

Import these names from :mod:`biomem.resilience.deadletter`. Every store
method is one committed transaction, so a process killed at any instant
leaves each letter absent or whole, and in exactly one state.
"""

from __future__ import annotations

import builtins
import enum
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

import duckdb
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

__all__ = [
    "DeadLetter",
    "DeadLetterStatus",
    "DeadLetterStore",
    "DuckDBDeadLetterStore",
    "DuckDBTransactions",
    "PostgresDeadLetterStore",
]


class DeadLetterStatus(enum.StrEnum):
    """Where a dead letter is in its life."""

    PENDING = "pending"  # waiting for next_attempt_at; one open letter per idempotency key
    REPLAYING = "replaying"  # claimed by a worker; requeue_stale() returns it if the worker died
    RECOVERED = "recovered"  # the operation ran successfully (final)
    DEAD = "dead"  # gave up after max_attempts; replayed only by hand (final)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One failed operation, kept with what it takes to run it again.

    Times are aware UTC datetimes from the wall clock. ``claimed_at`` is set
    while REPLAYING; ``updated_at`` is the time of the last state change
    (the store fills it from ``last_failed_at`` when None).
    """

    id: str
    operation: str
    payload: dict[str, Any]
    idempotency_key: str
    error_class: str
    message: str
    stack: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime
    status: DeadLetterStatus
    component: str
    claimed_at: datetime | None = None
    updated_at: datetime | None = None


@runtime_checkable
class DeadLetterStore(Protocol):
    """Durable storage of dead letters; each method is one committed transaction."""

    def ensure_schema(self) -> None:
        """Create the table and its indexes when missing."""
        ...

    def put(self, letter: DeadLetter) -> DeadLetter:
        """Insert ``letter``, or, when an open letter has its idempotency key, update that one.

        The update adds one attempt and takes the new payload, error and
        ``last_failed_at``; it keeps id, status, ``first_failed_at`` and
        ``next_attempt_at``. Returns the stored letter.
        """
        ...

    def get(self, letter_id: str) -> DeadLetter | None: ...

    def list(
        self,
        status: DeadLetterStatus | None = None,
        operation: str | None = None,
        limit: int = 100,
    ) -> builtins.list[DeadLetter]:
        """Letters by first failure, oldest first."""
        ...

    def claim_due(self, now: datetime, limit: int) -> builtins.list[DeadLetter]:
        """Mark up to ``limit`` PENDING letters due at ``now`` REPLAYING and return them.

        Two callers never receive the same letter.
        """
        ...

    def claim(self, letter_id: str, *, now: datetime) -> DeadLetter | None:
        """Mark one PENDING or DEAD letter REPLAYING (manual replay); None if it cannot be."""
        ...

    def release(
        self, letter_id: str, *, next_attempt_at: datetime, now: datetime
    ) -> DeadLetter | None:
        """Return a REPLAYING letter to PENDING without counting an attempt."""
        ...

    def mark_recovered(self, letter_id: str, now: datetime) -> DeadLetter | None: ...

    def mark_failed(
        self,
        letter_id: str,
        *,
        error_class: str,
        message: str,
        stack: str,
        attempts: int,
        next_attempt_at: datetime,
        dead: bool,
        now: datetime,
    ) -> DeadLetter | None:
        """Record a failed replay of a REPLAYING letter: back to PENDING, or DEAD."""
        ...

    def purge(self, status: DeadLetterStatus, older_than: datetime | None = None) -> int:
        """Delete letters in ``status`` last changed before ``older_than``; return how many."""
        ...

    def counts(self) -> dict[DeadLetterStatus, int]:
        """Letters per status, every status present."""
        ...

    def oldest_pending(self) -> datetime | None:
        """First failure of the oldest unresolved (PENDING or REPLAYING) letter."""
        ...

    def requeue_stale(self, older_than: datetime) -> int:
        """Return letters claimed before ``older_than`` (by a worker that died) to PENDING."""
        ...


class DuckDBTransactions(Protocol):
    """Anything that hands out DuckDB transactions (biomem's ``DuckDBStore`` does)."""

    def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


_COLUMNS: Final = (
    "id",
    "operation",
    "payload",
    "idempotency_key",
    "error_class",
    "message",
    "stack",
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "next_attempt_at",
    "status",
    "component",
    "claimed_at",
    "updated_at",
)
_COLS: Final = ", ".join(_COLUMNS)
_MARKS: Final = ", ".join(["%s"] * len(_COLUMNS))
_OPEN: Final = "('pending', 'replaying')"

# Statements both engines run as they are: {t} is the table, %s a parameter.
_GET: Final = f"SELECT {_COLS} FROM {{t}} WHERE id = %s"
_CLAIM: Final = (
    f"UPDATE {{t}} SET status = 'replaying', claimed_at = %s, updated_at = %s "
    "WHERE id = %s AND status IN ('pending', 'dead') "
    # A dead letter comes back only if no newer letter is open under its key.
    "AND NOT EXISTS (SELECT 1 FROM {t} AS o WHERE o.idempotency_key = {t}.idempotency_key "
    f"AND o.id <> {{t}}.id AND o.status IN {_OPEN}) RETURNING {_COLS}"
)
_RELEASE: Final = (
    "UPDATE {t} SET status = 'pending', claimed_at = NULL, next_attempt_at = %s, "
    f"updated_at = %s WHERE id = %s AND status = 'replaying' RETURNING {_COLS}"
)
_RECOVERED: Final = (
    "UPDATE {t} SET status = 'recovered', claimed_at = NULL, updated_at = %s "
    f"WHERE id = %s AND status = 'replaying' RETURNING {_COLS}"
)
_FAILED: Final = (
    "UPDATE {t} SET status = %s, error_class = %s, message = %s, stack = %s, attempts = %s, "
    "next_attempt_at = %s, last_failed_at = %s, claimed_at = NULL, updated_at = %s "
    f"WHERE id = %s AND status = 'replaying' RETURNING {_COLS}"
)
_COUNTS: Final = "SELECT status, count(*) FROM {t} GROUP BY status"
_OLDEST: Final = f"SELECT min(first_failed_at) FROM {{t}} WHERE status IN {_OPEN}"
_REQUEUE: Final = (
    "UPDATE {t} SET status = 'pending', claimed_at = NULL "
    "WHERE status = 'replaying' AND coalesce(claimed_at, updated_at) < %s RETURNING id"
)
# What a second put under an open letter's key changes (PostgreSQL's ON CONFLICT).
_TOUCH_OPEN: Final = (
    "SET attempts = d.attempts + 1, payload = EXCLUDED.payload, "
    "error_class = EXCLUDED.error_class, message = EXCLUDED.message, stack = EXCLUDED.stack, "
    "last_failed_at = EXCLUDED.last_failed_at, updated_at = EXCLUDED.updated_at"
)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"dead-letter times must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _decode(row: Sequence[Any]) -> DeadLetter:
    payload = row[2]
    if isinstance(payload, str | bytes):  # DuckDB hands JSON back as text
        payload = json.loads(payload)
    return DeadLetter(
        id=row[0],
        operation=row[1],
        payload=payload,
        idempotency_key=row[3],
        error_class=row[4],
        message=row[5],
        stack=row[6],
        attempts=int(row[7]),
        first_failed_at=_utc(row[8]),
        last_failed_at=_utc(row[9]),
        next_attempt_at=_utc(row[10]),
        status=DeadLetterStatus(row[11]),
        component=row[12],
        claimed_at=_maybe_utc(row[13]),
        updated_at=_maybe_utc(row[14]),
    )


def _values(letter: DeadLetter, payload: object) -> tuple[Any, ...]:
    return (
        letter.id,
        letter.operation,
        payload,
        letter.idempotency_key,
        letter.error_class,
        letter.message,
        letter.stack,
        letter.attempts,
        _utc(letter.first_failed_at),
        _utc(letter.last_failed_at),
        _utc(letter.next_attempt_at),
        letter.status.value,
        letter.component,
        _maybe_utc(letter.claimed_at),
        _utc(letter.updated_at or letter.last_failed_at),
    )


def _where(
    status: DeadLetterStatus | None, operation: str | None
) -> tuple[str, builtins.list[Any]]:
    clauses, params = ["TRUE"], builtins.list[Any]()
    if status is not None:
        clauses.append("status = %s")
        params.append(status.value)
    if operation is not None:
        clauses.append("operation = %s")
        params.append(operation)
    return " AND ".join(clauses), params


class _SQLStore:
    """The statements both engines share; subclasses run them in one transaction each."""

    def _run(self, template: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        raise NotImplementedError

    def _one(self, template: str, params: Sequence[Any]) -> DeadLetter | None:
        rows = self._run(template, params)
        return _decode(rows[0]) if rows else None

    def get(self, letter_id: str) -> DeadLetter | None:
        return self._one(_GET, (letter_id,))

    def list(
        self,
        status: DeadLetterStatus | None = None,
        operation: str | None = None,
        limit: int = 100,
    ) -> builtins.list[DeadLetter]:
        where, params = _where(status, operation)
        rows = self._run(
            f"SELECT {_COLS} FROM {{t}} WHERE {where} ORDER BY first_failed_at, id LIMIT %s",
            [*params, max(0, limit)],
        )
        return [_decode(row) for row in rows]

    def claim(self, letter_id: str, *, now: datetime) -> DeadLetter | None:
        return self._one(_CLAIM, (_utc(now), _utc(now), letter_id))

    def release(
        self, letter_id: str, *, next_attempt_at: datetime, now: datetime
    ) -> DeadLetter | None:
        return self._one(_RELEASE, (_utc(next_attempt_at), _utc(now), letter_id))

    def mark_recovered(self, letter_id: str, now: datetime) -> DeadLetter | None:
        return self._one(_RECOVERED, (_utc(now), letter_id))

    def mark_failed(
        self,
        letter_id: str,
        *,
        error_class: str,
        message: str,
        stack: str,
        attempts: int,
        next_attempt_at: datetime,
        dead: bool,
        now: datetime,
    ) -> DeadLetter | None:
        status = DeadLetterStatus.DEAD if dead else DeadLetterStatus.PENDING
        params = (status.value, error_class, message, stack, attempts)
        return self._one(_FAILED, (*params, _utc(next_attempt_at), _utc(now), _utc(now), letter_id))

    def purge(self, status: DeadLetterStatus, older_than: datetime | None = None) -> int:
        if older_than is None:
            return len(self._run("DELETE FROM {t} WHERE status = %s RETURNING id", (status.value,)))
        query = "DELETE FROM {t} WHERE status = %s AND updated_at < %s RETURNING id"
        return len(self._run(query, (status.value, _utc(older_than))))

    def counts(self) -> dict[DeadLetterStatus, int]:
        found = {DeadLetterStatus(status): int(n) for status, n in self._run(_COUNTS)}
        return {status: found.get(status, 0) for status in DeadLetterStatus}

    def oldest_pending(self) -> datetime | None:
        rows = self._run(_OLDEST)
        return _maybe_utc(rows[0][0]) if rows else None

    def requeue_stale(self, older_than: datetime) -> int:
        return len(self._run(_REQUEUE, (_utc(older_than),)))

    def delete(self, letter_id: str) -> bool:
        """Remove one letter whatever its status (it moved elsewhere); True if it was here."""
        return bool(self._run("DELETE FROM {t} WHERE id = %s RETURNING id", (letter_id,)))


class DuckDBDeadLetterStore(_SQLStore):
    """Dead letters in the table ``dead_letters`` of biomem's DuckDB file.

    Works only through ``transactions`` (biomem's ``DuckDBStore``, the
    process's one connection, which also translates DuckDB's errors): DuckDB
    admits one writing process, so this store never opens the file.
    """

    def __init__(self, transactions: DuckDBTransactions) -> None:
        self._transactions = transactions

    def _sql(self, template: str) -> str:
        return template.replace("{t}", "dead_letters").replace("%s", "?")

    def _run(self, template: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._transactions.transaction() as con:
            return con.execute(self._sql(template), builtins.list(params)).fetchall()

    def ensure_schema(self) -> None:
        with self._transactions.transaction() as con:
            con.execute(
                """
                CREATE TABLE IF NOT EXISTS dead_letters (
                    id              VARCHAR PRIMARY KEY,       -- uuid4
                    operation       VARCHAR NOT NULL,          -- a ReplayRegistry name
                    payload         JSON NOT NULL,             -- what replay needs, redacted
                    idempotency_key VARCHAR NOT NULL,          -- one open letter per key
                    error_class     VARCHAR NOT NULL,
                    message         VARCHAR NOT NULL,          -- redacted, one line
                    stack           VARCHAR NOT NULL,          -- redacted, at most 8 KiB
                    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
                    first_failed_at TIMESTAMPTZ NOT NULL,
                    last_failed_at  TIMESTAMPTZ NOT NULL,
                    next_attempt_at TIMESTAMPTZ NOT NULL,
                    status          VARCHAR NOT NULL
                        CHECK (status IN ('pending', 'replaying', 'recovered', 'dead')),
                    component       VARCHAR NOT NULL,          -- e.g. 'postgresql'
                    claimed_at      TIMESTAMPTZ,               -- while replaying
                    updated_at      TIMESTAMPTZ NOT NULL       -- last state change
                )
                """
            )
            con.execute(
                "CREATE INDEX IF NOT EXISTS dead_letters_due "
                "ON dead_letters (status, next_attempt_at)"
            )
            # DuckDB has no partial unique index: put() enforces one open
            # letter per key inside its transaction instead.
            con.execute(
                "CREATE INDEX IF NOT EXISTS dead_letters_key ON dead_letters (idempotency_key)"
            )

    def put(self, letter: DeadLetter) -> DeadLetter:
        values = _values(letter, json.dumps(letter.payload, allow_nan=False))
        # Look-up and write in one transaction on the process's only
        # connection: no other writer can slip a second open letter in between.
        with self._transactions.transaction() as con:
            existing = None
            if letter.status in (DeadLetterStatus.PENDING, DeadLetterStatus.REPLAYING):
                existing = con.execute(
                    f"SELECT id FROM dead_letters WHERE idempotency_key = ? AND status IN {_OPEN} "
                    "LIMIT 1",
                    [letter.idempotency_key],
                ).fetchone()
            if existing is None:
                marks = ", ".join(["?"] * len(_COLUMNS))
                query = f"INSERT INTO dead_letters ({_COLS}) VALUES ({marks}) RETURNING {_COLS}"
                row = con.execute(query, builtins.list(values)).fetchone()
            else:
                row = con.execute(
                    "UPDATE dead_letters SET attempts = attempts + 1, payload = ?, "
                    "error_class = ?, message = ?, stack = ?, last_failed_at = ?, updated_at = ? "
                    f"WHERE id = ? RETURNING {_COLS}",
                    [
                        values[2],  # the payload as JSON text
                        letter.error_class,
                        letter.message,
                        letter.stack,
                        _utc(letter.last_failed_at),
                        _utc(letter.updated_at or letter.last_failed_at),
                        existing[0],
                    ],
                ).fetchone()
        assert row is not None  # INSERT/UPDATE ... RETURNING of a row that exists
        return _decode(row)

    def claim_due(self, now: datetime, limit: int) -> builtins.list[DeadLetter]:
        # One process owns the file and the store serialises transactions,
        # so selecting and marking in one statement is enough.
        rows = self._run(
            "UPDATE {t} SET status = 'replaying', claimed_at = %s, updated_at = %s "
            "WHERE id IN (SELECT id FROM {t} WHERE status = 'pending' AND next_attempt_at <= %s "
            f"ORDER BY next_attempt_at, id LIMIT %s) RETURNING {_COLS}",
            (_utc(now), _utc(now), _utc(now), max(0, limit)),
        )
        return sorted((_decode(r) for r in rows), key=lambda d: (d.next_attempt_at, d.id))


class PostgresDeadLetterStore(_SQLStore):
    """Dead letters in ``<schema>.dead_letters`` of a PostgreSQL database.

    Several workers may share the table: claims lock rows with
    ``FOR UPDATE SKIP LOCKED``, and a partial unique index keeps one open
    letter per idempotency key.

    Args:
        connect: returns a connection context manager; each call serves one
            transaction. Pass biomem's ``PostgresClient.connection`` so that
            psycopg errors arrive translated at that boundary; tests may pass
            ``lambda: psycopg.connect(url)``.
        schema: the schema holding the table, created when missing.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        *,
        schema: str = "biomem",
    ) -> None:
        if not schema:
            raise ValueError("schema must be a non-empty name")
        self._connect = connect
        self.schema = schema
        self._table = sql.Identifier(schema, "dead_letters")

    def _query(self, template: str) -> sql.Composed:
        # The templates are constants of this module; only the table is variable.
        return sql.SQL(template).format(t=self._table)

    def _execute(self, query: sql.Composed, params: Sequence[Any]) -> builtins.list[Any]:
        with self._connect() as conn, conn.transaction():
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def _run(self, template: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        return self._execute(self._query(template), params)

    def ensure_schema(self) -> None:
        with self._connect() as conn, conn.transaction():
            # Serialise concurrent start-ups: CREATE ... IF NOT EXISTS races otherwise.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.dead_letters",)
            )
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(
                self._query(
                    """
                    CREATE TABLE IF NOT EXISTS {t} (
                        id              text PRIMARY KEY,
                        operation       text NOT NULL,
                        payload         jsonb NOT NULL,
                        idempotency_key text NOT NULL,
                        error_class     text NOT NULL,
                        message         text NOT NULL,
                        stack           text NOT NULL,
                        attempts        integer NOT NULL CHECK (attempts >= 0),
                        first_failed_at timestamptz NOT NULL,
                        last_failed_at  timestamptz NOT NULL,
                        next_attempt_at timestamptz NOT NULL,
                        status          text NOT NULL
                            CHECK (status IN ('pending', 'replaying', 'recovered', 'dead')),
                        component       text NOT NULL,
                        claimed_at      timestamptz,
                        updated_at      timestamptz NOT NULL
                    )
                    """
                )
            )
            conn.execute(
                self._query(
                    "CREATE INDEX IF NOT EXISTS dead_letters_due ON {t} (status, next_attempt_at)"
                )
            )
            conn.execute(
                self._query(
                    "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_open_key "
                    f"ON {{t}} (idempotency_key) WHERE status IN {_OPEN}"
                )
            )

    def put(self, letter: DeadLetter) -> DeadLetter:
        # One statement: the partial unique index arbitrates concurrent puts.
        rows = self._run(
            f"INSERT INTO {{t}} AS d ({_COLS}) VALUES ({_MARKS}) "
            f"ON CONFLICT (idempotency_key) WHERE status IN {_OPEN} DO UPDATE {_TOUCH_OPEN} "
            f"RETURNING {_COLS}",
            _values(letter, Jsonb(letter.payload)),
        )
        return _decode(rows[0])

    def adopt(self, letter: DeadLetter) -> bool:
        """Insert ``letter`` as it is (id, status, attempts) unless it is already here.

        For letters moving in from another store: a second adoption of the
        same id, or of an open letter whose key already has an open letter
        here (the same work), changes nothing. True when inserted.
        """
        rows = self._run(
            f"INSERT INTO {{t}} ({_COLS}) VALUES ({_MARKS}) ON CONFLICT DO NOTHING RETURNING id",
            _values(letter, Jsonb(letter.payload)),
        )
        return bool(rows)

    def claim_due(self, now: datetime, limit: int) -> builtins.list[DeadLetter]:
        # SKIP LOCKED: a row another worker is claiming right now is passed
        # over instead of waited for, so concurrent workers get disjoint sets.
        rows = self._run(
            "WITH due AS (SELECT id FROM {t} WHERE status = 'pending' AND next_attempt_at <= %s "
            "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE {t} SET status = 'replaying', claimed_at = %s, updated_at = %s "
            f"WHERE id IN (SELECT id FROM due) RETURNING {_COLS}",
            (_utc(now), max(0, limit), _utc(now), _utc(now)),
        )
        return sorted((_decode(r) for r in rows), key=lambda d: (d.next_attempt_at, d.id))
