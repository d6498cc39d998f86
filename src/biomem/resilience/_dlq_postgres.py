"""Dead letters in PostgreSQL, a table several workers may share.

Import these names from :mod:`biomem.resilience.deadletter`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from biomem.resilience._dlq_sql import (
    _COLS,
    _MARKS,
    _OPEN,
    DeadLetter,
    _decode,
    _SQLStore,
    _utc,
    _values,
)

__all__ = ["PostgresDeadLetterStore"]


# What a second put under an open letter's key changes (PostgreSQL's ON CONFLICT).
_TOUCH_OPEN: Final = (
    "SET payload = EXCLUDED.payload, "
    "error_class = EXCLUDED.error_class, message = EXCLUDED.message, stack = EXCLUDED.stack, "
    "last_failed_at = EXCLUDED.last_failed_at, updated_at = EXCLUDED.updated_at"
)


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
