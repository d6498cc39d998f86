"""Dead letters and the SQL both stores share: the record, its status, the store protocol.

The statements here run as they are on DuckDB and PostgreSQL (``{t}`` is the
table, ``%s`` a parameter); ``_SQLStore`` implements every store method they
cover. Each engine adds its connection, schema, ``put`` and ``claim_due``
(:mod:`biomem.resilience._dlq_duckdb`, :mod:`biomem.resilience._dlq_postgres`).
Import these names from :mod:`biomem.resilience.deadletter`. Every store
method is one committed transaction, so a process killed at any instant
leaves each letter absent or whole, and in exactly one state.
"""

from __future__ import annotations

import builtins
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

__all__ = ["DeadLetter", "DeadLetterStatus", "DeadLetterStore"]


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

        The update takes the new payload, error and ``last_failed_at``; it
        keeps id, status, attempts, ``first_failed_at`` and ``next_attempt_at``.
        A repeat is the same failure seen again while the letter waits (the
        scheduled run failing through the same outage), not a replay: only
        replays spend attempts, or an outage longer than ``max_attempts``
        schedule periods would kill the very letter that records it.
        Returns the stored letter.
        """
        ...

    def get(self, letter_id: str) -> DeadLetter | None: ...

    def list(
        self,
        status: DeadLetterStatus | None = None,
        operation: str | None = None,
        limit: int = 100,
        *,
        component: str | None = None,
        error_class: str | None = None,
    ) -> builtins.list[DeadLetter]:
        """Letters by first failure, oldest first; each given filter must match.

        ``error_class`` matches the stored class by its full name
        (``psycopg.OperationalError``) or by its last part (``OperationalError``).
        """
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


def _error_class_matches(error_class: str, wanted: str) -> bool:
    """Whether a stored error class is ``wanted``, by full name or by its last part."""
    return error_class == wanted or error_class.endswith("." + wanted)


@dataclass(frozen=True, slots=True)
class _Where:
    """The filters of a manual replay; None matches anything."""

    operation: str | None = None
    component: str | None = None
    error_class: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.operation is None or letter.operation == self.operation)
            and (self.component is None or letter.component == self.component)
            and (
                self.error_class is None
                or _error_class_matches(letter.error_class, self.error_class)
            )
        )


def _where(
    status: DeadLetterStatus | None,
    operation: str | None,
    component: str | None = None,
    error_class: str | None = None,
) -> tuple[str, builtins.list[Any]]:
    clauses, params = ["TRUE"], builtins.list[Any]()
    if status is not None:
        clauses.append("status = %s")
        params.append(status.value)
    if operation is not None:
        clauses.append("operation = %s")
        params.append(operation)
    if component is not None:
        clauses.append("component = %s")
        params.append(component)
    if error_class is not None:
        # _error_class_matches() in SQL; right() rather than LIKE, whose _ and %
        # in a class name would be wildcards.
        suffix = "." + error_class
        clauses.append("(error_class = %s OR right(error_class, %s) = %s)")
        params.extend([error_class, len(suffix), suffix])
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
        *,
        component: str | None = None,
        error_class: str | None = None,
    ) -> builtins.list[DeadLetter]:
        where, params = _where(status, operation, component, error_class)
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
