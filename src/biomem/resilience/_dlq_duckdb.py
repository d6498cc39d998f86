"""Dead letters in biomem's DuckDB file, through the process's one connection.

Import these names from :mod:`biomem.resilience.deadletter`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import duckdb

from biomem.resilience._dlq_sql import (
    _COLS,
    _COLUMNS,
    _OPEN,
    DeadLetter,
    DeadLetterStatus,
    _decode,
    _SQLStore,
    _utc,
    _values,
)

__all__ = ["DuckDBDeadLetterStore", "DuckDBTransactions"]


class DuckDBTransactions(Protocol):
    """Anything that hands out DuckDB transactions (biomem's ``DuckDBStore`` does)."""

    def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


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
                    "UPDATE dead_letters SET payload = ?, "
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
