"""The alert outbox: every notification kept in DuckDB until a receiver has it.

The manager *enqueues* notifications (one row per receiver, in one
transaction) and the deliverer *settles* them, so a notification survives a
crash or SIGKILL between the two: on restart the pending rows are still due.
Each row is one committed transaction per state change::

    enqueue ─► PENDING ─2xx─► DELIVERED
                 │  ▲
                 │  └─ network error, timeout, 5xx, 408, 429: next_attempt_at moves (backoff)
                 └─ any other 4xx ─► FAILED (final, never retried)

Order per alert: rows carry a table-wide ``seq`` (and, per alert, its own
sequence number in ``alert_seqs``); a row is due only when no *pending* row
with a smaller ``seq`` for the same receiver shares one of its alerts, so a
receiver never sees "resolved" before the "firing" it follows. A FAILED row
does not block later ones: it will never be delivered.

Works only through a ``transaction()`` provider (biomem's ``DuckDBStore``,
the process's one connection to the file); it never opens the file.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

import duckdb

__all__ = [
    "NewNotification",
    "Notification",
    "NotificationStatus",
    "Outbox",
    "OutboxTransactions",
]


class NotificationStatus(StrEnum):
    """Where a notification is in its life."""

    PENDING = "pending"  # waiting for next_attempt_at (and for earlier rows of its alerts)
    DELIVERED = "delivered"  # a receiver answered 2xx (final)
    FAILED = "failed"  # a receiver refused it with a non-retryable 4xx (final)


class OutboxTransactions(Protocol):
    """Anything that hands out DuckDB transactions (biomem's ``DuckDBStore`` does)."""

    def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One notification for one receiver; times are aware UTC datetimes."""

    id: str
    seq: int
    receiver: str
    group_key: str
    status_kind: str  # firing | resolved: the payload's status
    fingerprints: tuple[str, ...]
    alert_seqs: dict[str, int]
    payload: str  # the JSON body, exactly as sent and signed
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    last_status_code: int | None = None
    delivered_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The notification without its payload, as JSON data (for /health/alerts)."""
        return {
            "id": self.id,
            "receiver": self.receiver,
            "status": self.status.value,
            "kind": self.status_kind,
            "groupKey": self.group_key,
            "fingerprints": list(self.fingerprints),
            "attempts": self.attempts,
            "createdAt": self.created_at.isoformat(),
            "nextAttemptAt": self.next_attempt_at.isoformat(),
            "lastError": self.last_error,
            "lastStatusCode": self.last_status_code,
        }


_COLUMNS: Final = (
    "id, seq, receiver, group_key, status_kind, fingerprints, alert_seqs, payload, status, "
    "attempts, next_attempt_at, created_at, last_error, last_status_code, delivered_at"
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alert_outbox (
    id               VARCHAR PRIMARY KEY,     -- uuid4; the Idempotency-Key header
    seq              BIGINT NOT NULL UNIQUE,  -- table-wide enqueue order
    receiver         VARCHAR NOT NULL,
    group_key        VARCHAR NOT NULL,
    status_kind      VARCHAR NOT NULL CHECK (status_kind IN ('firing', 'resolved')),
    fingerprints     VARCHAR[] NOT NULL,      -- the alerts in the payload
    alert_seqs       JSON NOT NULL,           -- fingerprint -> its n-th notification
    payload          VARCHAR NOT NULL,        -- redacted webhook v4 JSON, sent verbatim
    status           VARCHAR NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    last_error       VARCHAR,                 -- redacted, one line
    last_status_code INTEGER,
    delivered_at     TIMESTAMPTZ
)
"""

# Due: pending, its time has come, and no earlier pending row to the same
# receiver shares an alert with it (delivery in order per alert).
_DUE: Final = f"""
SELECT {_COLUMNS} FROM alert_outbox AS n
WHERE n.status = 'pending' AND n.next_attempt_at <= ?
  AND NOT EXISTS (
    SELECT 1 FROM alert_outbox AS e
    WHERE e.receiver = n.receiver AND e.status = 'pending' AND e.seq < n.seq
      AND list_has_any(e.fingerprints, n.fingerprints))
ORDER BY n.seq
LIMIT ?
"""


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"outbox times must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _decode(row: Sequence[Any]) -> Notification:
    seqs = row[6]
    if isinstance(seqs, str):  # DuckDB hands JSON back as text
        seqs = json.loads(seqs)
    return Notification(
        id=row[0],
        seq=int(row[1]),
        receiver=row[2],
        group_key=row[3],
        status_kind=row[4],
        fingerprints=tuple(row[5]),
        alert_seqs={str(k): int(v) for k, v in seqs.items()},
        payload=row[7],
        status=NotificationStatus(row[8]),
        attempts=int(row[9]),
        next_attempt_at=_utc(row[10]),
        created_at=_utc(row[11]),
        last_error=row[12],
        last_status_code=None if row[13] is None else int(row[13]),
        delivered_at=_maybe_utc(row[14]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewNotification:
    """What the manager hands the outbox: one payload for one receiver."""

    receiver: str
    group_key: str
    status_kind: str
    fingerprints: tuple[str, ...]
    payload: str


class Outbox:
    """Notifications in the table ``alert_outbox`` of biomem's DuckDB file."""

    def __init__(self, transactions: OutboxTransactions) -> None:
        self._transactions = transactions

    def ensure_schema(self) -> None:
        """Create the table and its indexes when missing."""
        with self._transactions.transaction() as con:
            con.execute(_SCHEMA)
            con.execute(
                "CREATE INDEX IF NOT EXISTS alert_outbox_due "
                "ON alert_outbox (status, next_attempt_at)"
            )

    def enqueue(self, items: Sequence[NewNotification], *, now: datetime) -> list[Notification]:
        """Store ``items`` as PENDING rows, due ``now``, in one transaction; return them."""
        if not items:
            return []
        now = _utc(now)
        out: list[Notification] = []
        # One transaction on the process's only connection: seq numbers cannot
        # interleave with another enqueue, and a crash keeps all rows or none.
        with self._transactions.transaction() as con:
            row = con.execute("SELECT coalesce(max(seq), 0) FROM alert_outbox").fetchone()
            seq = int(row[0]) if row else 0
            for item in items:
                seq += 1
                alert_seqs: dict[str, int] = {}
                for fp in item.fingerprints:
                    found = con.execute(
                        "SELECT count(*) FROM alert_outbox "
                        "WHERE receiver = ? AND list_contains(fingerprints, ?)",
                        [item.receiver, fp],
                    ).fetchone()
                    alert_seqs[fp] = (int(found[0]) if found else 0) + 1
                note = Notification(
                    id=str(uuid.uuid4()),
                    seq=seq,
                    receiver=item.receiver,
                    group_key=item.group_key,
                    status_kind=item.status_kind,
                    fingerprints=item.fingerprints,
                    alert_seqs=alert_seqs,
                    payload=item.payload,
                    status=NotificationStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                con.execute(
                    f"INSERT INTO alert_outbox ({_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                    [
                        note.id,
                        note.seq,
                        note.receiver,
                        note.group_key,
                        note.status_kind,
                        list(note.fingerprints),
                        json.dumps(alert_seqs),
                        note.payload,
                        note.status.value,
                        0,
                        now,
                        now,
                    ],
                )
                out.append(note)
        return out

    def due(self, now: datetime, limit: int = 100) -> list[Notification]:
        """Pending rows due at ``now`` whose earlier rows (same receiver and alert) are settled."""
        with self._transactions.transaction() as con:
            rows = con.execute(_DUE, [_utc(now), max(0, limit)]).fetchall()
        return [_decode(r) for r in rows]

    def get(self, notification_id: str) -> Notification | None:
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM alert_outbox WHERE id = ?", [notification_id]
            ).fetchall()
        return _decode(rows[0]) if rows else None

    def list(
        self, status: NotificationStatus | None = None, limit: int = 1000
    ) -> list[Notification]:
        """Rows in enqueue order, optionally of one status."""
        where, params = ("WHERE status = ?", [status.value]) if status else ("", [])
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM alert_outbox {where} ORDER BY seq LIMIT ?",
                [*params, max(0, limit)],
            ).fetchall()
        return [_decode(r) for r in rows]

    def latest(self) -> builtins.list[Notification]:
        """The newest row per receiver and group, in enqueue order, whatever its status:
        what each receiver was last told of each group (see :mod:`biomem.alerts.restore`)."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM alert_outbox QUALIFY row_number() "
                "OVER (PARTITION BY receiver, group_key ORDER BY seq DESC) = 1 ORDER BY seq"
            ).fetchall()
        return [_decode(r) for r in rows]

    def undelivered(self, limit: int = 100) -> builtins.list[Notification]:
        """PENDING and FAILED rows (never delivered), in enqueue order."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM alert_outbox WHERE status <> 'delivered' "
                "ORDER BY seq LIMIT ?",
                [max(0, limit)],
            ).fetchall()
        return [_decode(r) for r in rows]

    def _settle(self, sets: str, params: builtins.list[Any], notification_id: str) -> None:
        with self._transactions.transaction() as con:
            con.execute(
                f"UPDATE alert_outbox SET {sets} WHERE id = ? AND status = 'pending'",
                [*params, notification_id],
            )

    def mark_delivered(self, notification_id: str, *, status_code: int, now: datetime) -> None:
        self._settle(
            "status = 'delivered', attempts = attempts + 1, last_status_code = ?, delivered_at = ?",
            [status_code, _utc(now)],
            notification_id,
        )

    def mark_retry(
        self,
        notification_id: str,
        *,
        error: str,
        status_code: int | None,
        next_attempt_at: datetime,
    ) -> None:
        self._settle(
            "attempts = attempts + 1, last_error = ?, last_status_code = ?, next_attempt_at = ?",
            [error, status_code, _utc(next_attempt_at)],
            notification_id,
        )

    def mark_failed(self, notification_id: str, *, error: str, status_code: int | None) -> None:
        self._settle(
            "status = 'failed', attempts = attempts + 1, last_error = ?, last_status_code = ?",
            [error, status_code],
            notification_id,
        )

    def counts(self) -> dict[NotificationStatus, int]:
        """Rows per status, every status present."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                "SELECT status, count(*) FROM alert_outbox GROUP BY status"
            ).fetchall()
        found = {str(s): int(n) for s, n in rows}
        return {s: found.get(s.value, 0) for s in NotificationStatus}

    def purge_delivered(self, older_than: datetime) -> int:
        """Delete DELIVERED rows delivered before ``older_than``; return how many."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                "DELETE FROM alert_outbox WHERE status = 'delivered' AND delivered_at < ? "
                "RETURNING id",
                [_utc(older_than)],
            ).fetchall()
        return len(rows)
