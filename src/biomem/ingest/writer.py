"""Writing a batch of memories and rejections into the store, idempotently.

The batch is merged by key: a new memory is inserted, a changed one updated
(its revision bumped and its derived data marked for recomputation), an
identical one left alone. Callers pass the open transaction so that a source's
checkpoint commits with the batch it describes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from biomem.ingest.records import Memory, Rejected

__all__ = ["IngestCounts", "write_batch"]

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    uid VARCHAR, source VARCHAR, source_id VARCHAR, content VARCHAR,
    created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, metadata JSON, content_hash VARCHAR
)
"""

_CLASSIFY = """
SELECT
    count(*) FILTER (WHERE m.uid IS NULL),
    count(*) FILTER (WHERE m.uid IS NOT NULL AND m.content_hash = s.content_hash),
    count(*) FILTER (WHERE m.uid IS NOT NULL AND m.content_hash <> s.content_hash
                     AND s.updated_at >= m.updated_at),
    count(*) FILTER (WHERE m.uid IS NOT NULL AND m.content_hash <> s.content_hash
                     AND s.updated_at < m.updated_at)
FROM ingest_stage s LEFT JOIN memories m ON m.uid = s.uid
"""

# A version older than the stored one (by updated_at) never overwrites it.
_UPDATE = """
UPDATE memories SET
    content = s.content, created_at = s.created_at, updated_at = s.updated_at,
    metadata = s.metadata, content_hash = s.content_hash,
    revision = memories.revision + 1, needs_recompute = TRUE, last_ingested_at = $1
FROM ingest_stage s
WHERE memories.uid = s.uid AND memories.content_hash <> s.content_hash
  AND s.updated_at >= memories.updated_at
"""

_INSERT = """
INSERT INTO memories (uid, source, source_id, content, created_at, updated_at, metadata,
                      content_hash, revision, needs_recompute, first_ingested_at, last_ingested_at)
SELECT s.uid, s.source, s.source_id, s.content, s.created_at, s.updated_at, s.metadata,
       s.content_hash, 1, TRUE, $1, $1
FROM ingest_stage s
WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.uid = s.uid)
"""

_QUARANTINE = """
INSERT INTO quarantine (source, location, line_no, record_id, reason, raw, raw_hash,
                        first_seen_at, last_seen_at)
SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::BIGINT[]),
       unnest($4::VARCHAR[]), unnest($5::VARCHAR[]), unnest($6::VARCHAR[]),
       unnest($7::VARCHAR[]), $8, $8
ON CONFLICT (source, location, raw_hash) DO UPDATE SET
    reason = excluded.reason, last_seen_at = excluded.last_seen_at,
    times_seen = quarantine.times_seen + 1
"""


@dataclass(slots=True)
class IngestCounts:
    """What one ingest did, record by record."""

    ingested: int = 0  # new memories inserted
    updated: int = 0  # changed memories updated
    unchanged: int = 0  # already stored as they are
    quarantined: int = 0  # bad records set aside with their reason
    stale: int = 0  # older versions of stored memories, not applied
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestCounts) -> None:
        self.ingested += other.ingested
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.stale += other.stale
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count

    @property
    def good(self) -> int:
        """Records that were valid, whatever their effect."""
        return self.ingested + self.updated + self.unchanged + self.stale

    def as_dict(self) -> dict[str, int]:
        return {
            "ingested": self.ingested,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "stale": self.stale,
        }


def _reason_kind(reason: str) -> str:
    # "content is 70000 bytes, over ..." → "content is N bytes": group reasons by their head.
    return reason.split(":")[0].split(" at ")[0][:60]


def write_batch(
    con: duckdb.DuckDBPyConnection,
    memories: Iterable[Memory],
    rejected: Iterable[Rejected],
    *,
    now: datetime,
) -> IngestCounts:
    """Merge one batch into ``memories`` and ``quarantine`` inside the caller's transaction."""
    counts = IngestCounts()
    latest: dict[str, Memory] = {}
    for memory in memories:
        seen = latest.get(memory.uid)
        if seen is None:
            latest[memory.uid] = memory
            continue
        # The same memory twice in one batch: the later version wins; the other
        # counts as unchanged when identical, updated when it was replaced.
        newer, older = (memory, seen) if memory.updated_at >= seen.updated_at else (seen, memory)
        latest[memory.uid] = newer
        if newer.content_hash == older.content_hash:
            counts.unchanged += 1
        else:
            counts.updated += 1
    if latest:
        rows = list(latest.values())
        con.execute(_STAGE_DDL)
        con.execute("DELETE FROM ingest_stage")
        con.execute(
            "INSERT INTO ingest_stage SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]),"
            " unnest($3::VARCHAR[]), unnest($4::VARCHAR[]), unnest($5::TIMESTAMPTZ[]),"
            " unnest($6::TIMESTAMPTZ[]), unnest($7::VARCHAR[])::JSON, unnest($8::VARCHAR[])",
            [
                [m.uid for m in rows],
                [m.source for m in rows],
                [m.source_id for m in rows],
                [m.content for m in rows],
                [m.created_at for m in rows],
                [m.updated_at for m in rows],
                [m.metadata_json for m in rows],
                [m.content_hash for m in rows],
            ],
        )
        new, same, changed, stale = con.execute(_CLASSIFY).fetchone() or (0, 0, 0, 0)
        counts.ingested += int(new)
        counts.unchanged += int(same)
        counts.updated += int(changed)
        counts.stale += int(stale)
        if changed:
            con.execute(_UPDATE, [now])
        if new:
            con.execute(_INSERT, [now])
        con.execute("DELETE FROM ingest_stage")
    unique: dict[tuple[str, str, str], Rejected] = {}
    for bad in rejected:
        counts.quarantined += 1
        kind = _reason_kind(bad.reason)
        counts.reasons[kind] = counts.reasons.get(kind, 0) + 1
        # ON CONFLICT cannot see two rows with one key in a single statement.
        unique[(bad.source, bad.location, bad.raw_hash)] = bad
    if unique:
        bads = list(unique.values())
        con.execute(
            _QUARANTINE,
            [
                [b.source for b in bads],
                [b.location for b in bads],
                [b.line_no for b in bads],
                [b.record_id for b in bads],
                [b.reason for b in bads],
                [b.raw for b in bads],
                [b.raw_hash for b in bads],
                now,
            ],
        )
    return counts
