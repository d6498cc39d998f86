"""The runs table: one row per run of a stage, written as the run starts and ends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from biomem.resilience.redact import redact_text
from biomem.store.connection import DuckDBStore

__all__ = ["RunHandle", "RunStatus", "last_runs", "record_run"]


class RunStatus(StrEnum):
    RUNNING = "running"  # started, not yet finished (or killed mid-run)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped at a batch boundary by shutdown
    DEFERRED = "deferred"  # its dependency is down; the work waits for a later run


@dataclass(slots=True)
class RunHandle:
    """What the body of :func:`record_run` fills in."""

    run_id: int
    counts: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.SUCCEEDED


@contextmanager
def record_run(
    store: DuckDBStore,
    stage: str,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[RunHandle]:
    """Record a run of ``stage``: a row at start, completed (or failed) at the end.

    A run killed outright stays ``running`` in the table, which is how a later
    reader tells a crash from a clean end.
    """
    row = store.fetchone(
        "INSERT INTO runs (stage, started_at, status) VALUES (?, ?, ?) RETURNING id",
        [stage, wall_clock(), RunStatus.RUNNING.value],
    )
    assert row is not None
    handle = RunHandle(run_id=int(row[0]))
    try:
        yield handle
    except BaseException as exc:
        _finish(store, handle, RunStatus.FAILED, f"{type(exc).__name__}: {exc}", wall_clock())
        raise
    _finish(store, handle, handle.status, None, wall_clock())


def _finish(
    store: DuckDBStore, handle: RunHandle, status: RunStatus, error: str | None, now: datetime
) -> None:
    store.execute(
        "UPDATE runs SET finished_at = ?, status = ?, counts = ?::JSON, error = ? WHERE id = ?",
        [
            now,
            status.value,
            json.dumps(handle.counts),
            None if error is None else redact_text(error)[:2000],
            handle.run_id,
        ],
    )


def last_runs(store: DuckDBStore, *, limit: int = 20) -> list[Mapping[str, Any]]:
    """The runs with the most recent activity first: a run counts from when it finished,
    or from when it started while it is still running.

    Ordering by start alone would hide a long run's end: by the time it finishes,
    the quick stages have started twenty runs after it.
    """
    rows = store.execute(
        "SELECT id, stage, started_at, finished_at, status, counts, error FROM runs"
        " ORDER BY coalesce(finished_at, started_at) DESC, id DESC LIMIT ?",
        [limit],
    )
    keys = ("id", "stage", "started_at", "finished_at", "status", "counts", "error")
    return [dict(zip(keys, row, strict=True)) for row in rows]
