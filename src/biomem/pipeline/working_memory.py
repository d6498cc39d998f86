"""Working memory: the few memories in the attention window, ranked by priority.

priority = 0.4·importance + 0.3·recency + 0.2·access + 0.1·|emotional valence|

recency falls linearly from 1 (now) to 0 (the window's start); access is the
memory's access count relative to the most-accessed memory in the window;
valence is the enrichment's sentiment, else metadata ``emotional_valence``.
Each run stores a snapshot of at most ``capacity`` memories with their rank.
"""

from __future__ import annotations

from biomem.pipeline.base import StageContext, StageResult

__all__ = ["WorkingMemoryStage"]

_SNAPSHOT = """
INSERT INTO working_memory (run_id, as_of, rank, uid, priority)
WITH window_rows AS (
    SELECT m.uid, m.created_at,
           COALESCE(s.importance,
                    TRY_CAST(json_extract_string(m.metadata, '$.importance') AS DOUBLE), 0.5)
               AS importance,
           COALESCE(s.access_count, 0) AS access_count,
           COALESCE(e.sentiment,
                    TRY_CAST(json_extract_string(m.metadata, '$.emotional_valence') AS DOUBLE),
                    0.0) AS valence
    FROM memories m
    LEFT JOIN memory_state s USING (uid)
    LEFT JOIN enrichments e USING (uid)
    WHERE m.created_at <= $as_of
      AND m.created_at > $as_of - to_microseconds(CAST($window_us AS BIGINT))
), scored AS (
    SELECT uid, created_at,
           0.4 * least(greatest(importance, 0), 1)
         + 0.3 * (1 - epoch_us($as_of - created_at) / $window_us)
         + 0.2 * CASE WHEN max(access_count) OVER () > 0
                      THEN access_count / max(access_count) OVER () ELSE 0 END
         + 0.1 * least(abs(valence), 1) AS priority
    FROM window_rows
)
SELECT $run_id, $as_of, row_number() OVER (ORDER BY priority DESC, created_at DESC, uid),
       uid, priority
FROM scored
ORDER BY priority DESC, created_at DESC, uid
LIMIT $capacity
"""


class WorkingMemoryStage:
    """Snapshot the attention window (reads ingest; enrichment when present)."""

    name = "working_memory"
    after: tuple[str, ...] = ("short_term",)  # valence from the enrichment

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.settings.pipeline.working_memory
        with ctx.store.transaction() as con:
            con.execute(
                _SNAPSHOT,
                {
                    "as_of": ctx.as_of,
                    "window_us": int(cfg.window_seconds * 1_000_000),
                    "run_id": ctx.run_id,
                    "capacity": cfg.capacity,
                },
            )
            row = con.execute(
                "SELECT count(*) FROM working_memory WHERE run_id = ?", [ctx.run_id]
            ).fetchone()
        items = int(row[0]) if row else 0
        return StageResult(items=items, detail={"as_of": ctx.as_of.isoformat()})
