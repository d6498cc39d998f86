"""Silences: label matchers that mute alerts until an end time, kept in the store.

A silence lives in the table ``alert_silences`` of biomem's DuckDB file, so
it outlasts a restart: the manager loads the active ones when it starts.
Ending a silence early (``unsilence``) moves its ``ends_at`` to now, as
Alertmanager's "expire" does, so the row stays as a record of who muted what.
Times are wall-clock times people read (aware UTC); whether a silence is
active is decided against the manager's wall clock, never the machine's.

The comment and the creator are redacted on the way in: a password pasted
into a comment never reaches the store or a response.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import duckdb

from biomem.alerts.model import Matchers, rfc3339
from biomem.resilience.redact import redact_text

__all__ = ["Silence", "SilenceStore", "Silences", "new_silence"]

_MAX_TEXT: Final = 1000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alert_silences (
    id          VARCHAR PRIMARY KEY,   -- uuid4
    matchers    JSON NOT NULL,         -- label -> value, or "=~regex"
    created_by  VARCHAR NOT NULL,      -- redacted
    comment     VARCHAR NOT NULL,      -- redacted
    created_at  TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL   -- moved to the expiry time by unsilence
)
"""
_COLUMNS: Final = "id, matchers, created_by, comment, created_at, ends_at"


class _Transactions(Protocol):
    def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Silence:
    """Mutes every alert whose labels match all ``matchers`` from ``created_at`` to ``ends_at``."""

    id: str
    matchers: Mapping[str, str]
    ends_at: datetime
    created_at: datetime
    created_by: str = ""
    comment: str = ""
    _match: Matchers = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ValueError("a silence needs at least one matcher")
        for name, value in (("ends_at", self.ends_at), ("created_at", self.created_at)):
            if value.tzinfo is None:
                raise ValueError(f"Silence.{name} must be timezone-aware, got {value!r}")
        object.__setattr__(self, "_match", Matchers(self.matchers))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches ``labels``."""
        return self._match(labels)

    def active(self, now: datetime) -> bool:
        return now < self.ends_at

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The silence as JSON data (``status`` active/expired when ``now`` is given)."""
        out: dict[str, Any] = {
            "id": self.id,
            "matchers": dict(self.matchers),
            "createdBy": self.created_by,
            "comment": self.comment,
            "startsAt": rfc3339(self.created_at),
            "endsAt": rfc3339(self.ends_at),
        }
        if now is not None:
            out["status"] = "active" if self.active(now) else "expired"
        return out


def _clean(text: str) -> str:
    return " ".join(redact_text(text).split())[:_MAX_TEXT]


def new_silence(
    matchers: Mapping[str, str],
    *,
    ends_at: datetime,
    now: datetime,
    created_by: str = "",
    comment: str = "",
) -> Silence:
    """A new silence with a fresh id, its texts redacted.

    Raises:
        ValueError: no matcher, a bad matcher, or an end that is not after ``now``.
    """
    if ends_at.tzinfo is None:
        raise ValueError("the end of a silence must carry a time zone")
    if ends_at <= now:
        raise ValueError("the end of a silence must be in the future")
    return Silence(
        id=str(uuid.uuid4()),
        matchers=dict(matchers),
        ends_at=ends_at.astimezone(UTC),
        created_at=now.astimezone(UTC),
        created_by=_clean(created_by),
        comment=_clean(comment),
    )


def _decode(row: Sequence[Any]) -> Silence:
    matchers = row[1]
    if isinstance(matchers, str):  # DuckDB hands JSON back as text
        matchers = json.loads(matchers)
    return Silence(
        id=row[0],
        matchers={str(k): str(v) for k, v in matchers.items()},
        created_by=row[2],
        comment=row[3],
        created_at=row[4].astimezone(UTC),
        ends_at=row[5].astimezone(UTC),
    )


class SilenceStore:
    """Silences in the table ``alert_silences``, through the store's transactions."""

    def __init__(self, transactions: _Transactions) -> None:
        self._transactions = transactions

    def ensure_schema(self) -> None:
        with self._transactions.transaction() as con:
            con.execute(_SCHEMA)

    def add(self, silence: Silence) -> None:
        with self._transactions.transaction() as con:
            con.execute(
                f"INSERT INTO alert_silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    silence.id,
                    json.dumps(dict(silence.matchers)),
                    silence.created_by,
                    silence.comment,
                    silence.created_at,
                    silence.ends_at,
                ],
            )

    def expire(self, silence_id: str, *, now: datetime) -> Silence | None:
        """End an active silence at ``now``; None when no active silence has that id."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"UPDATE alert_silences SET ends_at = ? WHERE id = ? AND ends_at > ? "
                f"RETURNING {_COLUMNS}",
                [now, silence_id, now],
            ).fetchall()
        return _decode(rows[0]) if rows else None

    def active(self, now: datetime) -> list[Silence]:
        """Silences not yet ended at ``now``, oldest first."""
        with self._transactions.transaction() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM alert_silences WHERE ends_at > ? ORDER BY created_at, id",
                [now],
            ).fetchall()
        return [_decode(r) for r in rows]


class Silences:
    """The active silences in memory, written through to a :class:`SilenceStore` when given.

    The store is written first: a silence the store refused is not in force,
    so what mutes alerts is always what survives a restart.
    """

    def __init__(self, store: SilenceStore | None = None, *, now: datetime) -> None:
        self._store = store
        self._lock = threading.Lock()
        loaded = store.active(now) if store is not None else []
        self._active: dict[str, Silence] = {s.id: s for s in loaded}

    def add(self, silence: Silence) -> None:
        if self._store is not None:
            self._store.add(silence)
        with self._lock:
            self._active[silence.id] = silence

    def expire(self, silence_id: str, *, now: datetime) -> Silence | None:
        """End a silence now; None when none is active with that id."""
        with self._lock:
            known = self._active.get(silence_id)
        if self._store is not None:
            ended = self._store.expire(silence_id, now=now)
        elif known is not None and known.active(now):
            ended = Silence(
                id=known.id,
                matchers=known.matchers,
                created_by=known.created_by,
                comment=known.comment,
                created_at=known.created_at,
                ends_at=now,
            )
        else:
            ended = None
        with self._lock:
            self._active.pop(silence_id, None)
        return ended

    def prune(self, now: datetime) -> None:
        """Forget silences that have ended (their rows stay in the store)."""
        with self._lock:
            for sid in [sid for sid, s in self._active.items() if not s.active(now)]:
                del self._active[sid]

    def active(self, now: datetime) -> list[Silence]:
        with self._lock:
            return [s for s in self._active.values() if s.active(now)]

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether an active silence matches ``labels``."""
        with self._lock:
            return any(s.active(now) and s.matches(labels) for s in self._active.values())
