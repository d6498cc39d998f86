"""10,000 bad records in one ingest batch among good ones: each bad one is quarantined once
with its reason, every good one flows through the whole pipeline, nothing stops."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from tests.chaos.audit import audit_writeback, recovery_story
from tests.chaos.data import SourceTable, sample_records
from tests.chaos.figures import round_s
from tests.chaos.scenario import Scenario

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

GOOD = 400
BAD = 10_000
MAX_CONTENT = 2000
_START = datetime(2026, 10, 5, 6, 0, tzinfo=UTC)
# kind -> (content, created_at, metadata JSON) of a bad row, and the reason's head
BAD_KINDS = {
    "no content": (None, _START, "{}"),
    "blank content": ("   \t  ", _START, "{}"),
    "content too large": ("x" * (MAX_CONTENT + 500), _START, "{}"),
    "metadata not an object": ("a memory with list metadata", _START, "[1, 2, 3]"),
    "created_at out of range": ("a memory from long ago", datetime(1850, 1, 1, tzinfo=UTC), "{}"),
}


def batch() -> tuple[list[tuple[object, ...]], set[str]]:
    """GOOD good rows with BAD bad ones (five kinds, equally many) between them, by id."""
    rows: list[tuple[object, ...]] = []
    good: set[str] = set()
    kinds = list(BAD_KINDS.values())
    total = GOOD + BAD
    every = total // GOOD
    for n in range(1, total + 1):
        if n % every == 0 and len(good) < GOOD:
            record = sample_records()[n % len(sample_records())]
            content = f"{record['content']} (#{n})"
            metadata = json.dumps(record.get("metadata") or {})
            rows.append((n, content, _START + timedelta(minutes=n), metadata))
            good.add(f"postgres:{n}")
        else:
            content, created, metadata = kinds[n % len(kinds)]
            rows.append((n, content, created, metadata))
    return rows, good


@pytest.mark.chaos_smoke
def test_bad_records(scenario: Scenario, pg_clean_url: str) -> None:
    """One ingest batch holds 10,000 bad rows of five kinds among 400 good ones: all bad ones
    are quarantined once with their reason, the good ones are ingested, enriched, embedded,
    grouped and written back, and the run goes on as usual."""
    s = scenario
    source = SourceTable(pg_clean_url)
    source.create()
    rows, good = batch()
    source.insert_raw(rows)
    assert len(rows) - len(good) == BAD
    s.configure("ingest", batch_size=20_000, max_content_bytes=MAX_CONTENT)
    s.extra_env["POSTGRES_DB_URL"] = pg_clean_url
    s.with_ollama()
    s.fault(f"one ingest batch of {BAD} bad rows among {GOOD} good ones")
    s.start()
    runs = s.settle(["ingest", "short_term", "long_term", "writeback"], after=s.wall_fault)
    first = s.watch.stage_runs("ingest")[0]
    counts = first["counts"]
    assert (counts["ingested"], counts["quarantined"]) == (GOOD, BAD), counts
    assert s.wall_fault is not None
    s.figures.time_to_detect_s = round_s((first["finished"] - s.wall_fault).total_seconds())
    s.figures.detected_by = "runs: the ingest run counts 10,000 quarantined (biomem quarantine)"
    s.figures.time_to_recover_s = 0.0
    s.figures.recovered_by = "nothing stopped: the good records flowed on in the same run"
    done = runs["writeback"]["finished"]
    statuses = {smp.status for smp in s.watch.snapshot() if smp.up}
    s.stop()

    audit = s.audit(good)
    assert audit.quarantined == BAD
    with duckdb.connect(str(s.store_path), read_only=True) as con:
        reasons = con.execute(
            "SELECT reason, times_seen, record_id FROM quarantine ORDER BY record_id"
        ).fetchall()
        stored = {r[0] for r in con.execute("SELECT uid FROM memories").fetchall()}
    assert all(seen == 1 for _, seen, _ in reasons), "a bad row was quarantined twice"
    assert len({rid for _, _, rid in reasons}) == BAD
    assert not stored - good
    heads = Counter(reason.split(":")[0].split(",")[0][:40] for reason, _, _ in reasons)
    assert len(heads) >= len(BAD_KINDS), heads
    copy = source.uids()
    assert len(copy) == len(rows)
    written = audit_writeback(pg_clean_url, good)
    assert written.rows == written.distinct == GOOD and not written.missing, written
    assert "fail" not in statuses, "bad input failed /health"
    s.figures.facts["quarantine_reasons"] = dict(heads)
    s.figures.say(
        f"One ingest batch read {len(rows)} rows: {BAD} bad ones of five kinds "
        f"({', '.join(BAD_KINDS)}) were quarantined once each with their reason, and the "
        f"{GOOD} good ones were ingested in the same run "
        f"({s.figures.time_to_detect_s} s after the daemon started)."
    )
    s.figures.say(
        f"The good memories went through every stage and were written back to PostgreSQL "
        f"{(done - s.wall_fault).total_seconds():.1f} s after the start; /health stayed "
        f"{'/'.join(sorted(str(x) for x in statuses))} (never fail) and no alert named the "
        "ingest: bad input is not an outage."
    )
    s.figures.say(s.alerts_sentence())
    assert not s.receiver.about("postgresql") and not s.receiver.about("pipeline")
    recovery_story(
        s.figures, audit, fault=s.fault_window(),
        quiet_reason="bad records are quarantined with their reason; nothing was broken",
    )  # fmt: skip
