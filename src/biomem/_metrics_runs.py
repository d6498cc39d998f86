"""Stage runs as the metrics see them, folded in from the runs table a scrape at a time (private).

:class:`RunTotals` keeps, per stage, the runs that ended by status, the items
by source, the last duration and a histogram of durations, and folds in only
the rows new since the last scrape (:data:`RUNS_SQL`). Import the bucket bounds
from :mod:`biomem.metrics`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["RUNS_SQL", "STAGE_DURATION_BUCKETS", "Durations", "RunTotals"]

# Upper bounds of biomem_stage_run_duration_seconds: from a quick ingest pass
# (10 ms) to a long-term or dream run of an hour; +Inf is added by the family.
STAGE_DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

# Only rows not folded in yet: newer than the watermark, or still running at the
# last scrape. Ids come from a sequence and each run row is inserted by one
# autocommit statement under the store's lock, so ids become visible in order
# and nothing appears below the watermark later. Durations are bucketed here,
# cumulatively (each bucket counts the runs at or under its bound), so a scrape
# after a long downtime reads one row per (stage, status), never a list of runs.
# A wall clock stepped back between start and end would give a negative
# duration: counted as 0.
RUNS_SQL = f"""
WITH fresh AS (
    SELECT id, stage, status, counts, finished_at,
           greatest(epoch(finished_at) - epoch(started_at), 0) AS seconds
    FROM runs
    WHERE id > ? OR list_contains(?::BIGINT[], id)
)
SELECT stage, status, count(*),
       sum(coalesce(TRY_CAST(counts->>'$.llm' AS BIGINT), 0)),
       sum(coalesce(TRY_CAST(counts->>'$.fallback' AS BIGINT), 0)),
       max(id),
       max(id) FILTER (WHERE finished_at IS NOT NULL),
       arg_max(seconds, id) FILTER (WHERE finished_at IS NOT NULL),
       list(id) FILTER (WHERE status = 'running'),
       count(seconds),
       coalesce(sum(seconds), 0),
       [{", ".join(f"count(*) FILTER (WHERE seconds <= {b!r})" for b in STAGE_DURATION_BUCKETS)}]
FROM fresh
GROUP BY stage, status
"""  # the only interpolation: the constant bucket bounds above


class Durations:
    """One stage's histogram of run durations: cumulative bucket counts, sum and count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * len(STAGE_DURATION_BUCKETS)
        self.count = 0
        self.total = 0.0

    def add(self, count: int, total: float, buckets: Sequence[int]) -> None:
        self.count += count
        self.total += total
        self.buckets = [a + int(b) for a, b in zip(self.buckets, buckets, strict=True)]

    def copy(self) -> Durations:
        twin = Durations()
        twin.add(self.count, self.total, self.buckets)
        return twin


class RunTotals:
    """Counts of ended runs, folded in incrementally so a scrape reads only new rows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watermark = 0
        self.running: list[int] = []
        self.runs: dict[tuple[str, str], int] = {}
        self.items: dict[tuple[str, str], int] = {}
        self.last: dict[str, tuple[int, float]] = {}  # stage -> (run id, seconds)
        self.durations: dict[str, Durations] = {}

    def fold(self, rows: Sequence[tuple[Any, ...]]) -> None:
        running: list[int] = []
        for row in rows:
            stage, status, runs, llm, fallback, max_id, last_id, seconds, ids = row[:9]
            timed, total_s, buckets = row[9:]
            self.watermark = max(self.watermark, int(max_id))
            if status == "running":
                running.extend(int(i) for i in ids or ())
                continue
            key = (str(stage), str(status))
            self.runs[key] = self.runs.get(key, 0) + int(runs)
            durations = self.durations.setdefault(str(stage), Durations())
            durations.add(int(timed), float(total_s), buckets)
            for source, count in (("llm", llm), ("fallback", fallback)):
                item_key = (str(stage), source)
                self.items[item_key] = self.items.get(item_key, 0) + int(count or 0)
            if last_id is not None and seconds is not None:
                previous = self.last.get(str(stage))
                if previous is None or int(last_id) > previous[0]:
                    self.last[str(stage)] = (int(last_id), float(seconds))
        self.running = running
