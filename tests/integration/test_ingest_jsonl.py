"""Ingest from JSON Lines through the real CLI and a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from biomem.config import IngestSettings
from biomem.ingest import ingest_jsonl, max_line_bytes
from biomem.store import DuckDBStore
from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.integration


def jsonl(*records: dict[str, object] | bytes) -> bytes:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    return b"\n".join(lines) + b"\n"


def mem(ident: str, content: str = "a memory", **extra: object) -> dict[str, object]:
    return {"id": ident, "content": content, "created_at": "2026-10-05T09:00:00Z", **extra}


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def counts(stdout: str) -> dict[str, int]:
    data: dict[str, int] = json.loads(stdout.strip().splitlines()[-1])
    return data


BAD_RECORDS = [
    b'{"id": "no-content", "created_at": "2026-10-05T09:00:00Z"}',
    b'{"id": "bad-utf8", "content": "caf\xe9", "created_at": "2026-10-05T09:00:00Z"}',
    json.dumps(mem("too-big", "x" * 70000)).encode(),
    b'{"id": "broken", "content": ',
    json.dumps(mem("bad-time") | {"created_at": "31/02/2026"}).encode(),
]


def test_mixed_file_ingests_good_and_quarantines_each_bad_kind(
    tmp_path: Path, store_path: Path
) -> None:
    """Good lines are stored; each bad kind is quarantined with its line number and reason."""
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(jsonl(mem("a"), *BAD_RECORDS, mem("b", "another")))
    result = run_cli("ingest", str(source), "--json")
    assert result.returncode == 0, result.stderr
    got = counts(result.stdout)
    assert (got["ingested"], got["updated"], got["unchanged"], got["quarantined"]) == (2, 0, 0, 5)
    rows = query(
        store_path, "SELECT line_no, record_id, reason, location FROM quarantine ORDER BY line_no"
    )
    assert [(r[0], r[1]) for r in rows] == [
        (2, "no-content"),
        (3, None),  # the id cannot be read from a line that is not UTF-8
        (4, "too-big"),
        (5, None),
        (6, "bad-time"),
    ]
    reasons = [str(r[2]) for r in rows]
    assert reasons[0] == "no content"
    assert reasons[1].startswith("invalid UTF-8")
    assert reasons[2] == "content is 70000 bytes, over the limit of 65536"
    assert reasons[3].startswith("malformed JSON")
    assert reasons[4].startswith("bad timestamp in created_at")
    assert all(str(r[3]).startswith(f"{source}:") for r in rows)


def test_only_bad_records_exits_1(tmp_path: Path) -> None:
    """An input holding only bad records exits 1, having quarantined all of them."""
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl(*BAD_RECORDS))
    result = run_cli("ingest", str(source))
    assert result.returncode == 1
    assert "ingested 0, updated 0, unchanged 0, quarantined 5" in result.stdout


def test_reingest_is_idempotent_and_changes_update(tmp_path: Path, store_path: Path) -> None:
    """The same input twice leaves one row each; a changed memory updates its row and is marked."""
    first = tmp_path / "first.jsonl"
    first.write_bytes(jsonl(mem("a", "original"), mem("b"), b"garbage"))
    assert counts(run_cli("ingest", str(first), "--json").stdout)["ingested"] == 2
    again = counts(run_cli("ingest", str(first), "--json").stdout)
    assert (again["ingested"], again["unchanged"], again["quarantined"]) == (0, 2, 1)
    assert query(store_path, "SELECT count(*) FROM quarantine") == [(1,)]
    assert query(store_path, "SELECT times_seen FROM quarantine") == [(2,)]
    # Clear the recompute marks, as the pipeline does after processing.
    with DuckDBStore.open(store_path) as store:
        store.execute("UPDATE memories SET needs_recompute = false")
    second = tmp_path / "second.jsonl"
    second.write_bytes(jsonl(mem("a", "edited", updated_at="2026-10-06T09:00:00Z"), mem("b")))
    got = counts(run_cli("ingest", str(second), "--json").stdout)
    assert (got["ingested"], got["updated"], got["unchanged"]) == (0, 1, 1)
    rows = query(
        store_path, "SELECT source_id, content, revision, needs_recompute FROM memories ORDER BY 1"
    )
    assert rows == [("a", "edited", 2, True), ("b", "a memory", 1, False)]


def test_older_version_never_overwrites_newer(tmp_path: Path, store_path: Path) -> None:
    """A stale copy of a memory (older updated_at) is counted as stale and not applied."""
    newer = tmp_path / "newer.jsonl"
    newer.write_bytes(jsonl(mem("a", "v2", updated_at="2026-10-07T00:00:00Z")))
    run_cli("ingest", str(newer))
    older = tmp_path / "older.jsonl"
    older.write_bytes(jsonl(mem("a", "v1", updated_at="2026-10-06T00:00:00Z")))
    got = counts(run_cli("ingest", str(older), "--json").stdout)
    assert got["stale"] == 1 and got["updated"] == 0
    assert query(store_path, "SELECT content FROM memories") == [("v2",)]


def test_duplicate_ids_in_one_batch_keep_the_latest(tmp_path: Path, store_path: Path) -> None:
    """Two versions of one memory in one input leave one row, the later version."""
    source = tmp_path / "dups.jsonl"
    source.write_bytes(
        jsonl(
            mem("a", "later", updated_at="2026-10-08T00:00:00Z"),
            mem("a", "earlier", updated_at="2026-10-06T00:00:00Z"),
        )
    )
    got = counts(run_cli("ingest", str(source), "--json").stdout)
    assert got["ingested"] == 1
    assert query(store_path, "SELECT content FROM memories") == [("later",)]


def test_stdin_is_accepted() -> None:
    """`biomem ingest -` reads standard input."""
    result = run_cli("ingest", "-", "--json", input_bytes=jsonl(mem("s1"), mem("s2")))
    assert result.returncode == 0, result.stderr
    assert counts(result.stdout)["ingested"] == 2


def test_runaway_line_is_quarantined_in_bounded_memory(store: DuckDBStore, tmp_path: Path) -> None:
    """A line longer than the read cap is quarantined as too long and the next line still read."""
    settings = IngestSettings(max_content_bytes=1024)
    cap = max_line_bytes(1024)
    source = tmp_path / "long.jsonl"
    source.write_bytes(b'{"content": "' + b"y" * (cap * 2) + b'"}\n' + jsonl(mem("after")))
    with source.open("rb") as stream:
        got = ingest_jsonl(store, stream, location="long.jsonl", settings=settings)
    assert (got.ingested, got.quarantined) == (1, 1)
    reason, raw = store.execute("SELECT reason, raw FROM quarantine")[0]
    assert reason == f"line longer than {cap} bytes"
    assert len(raw) <= 4096


def test_batches_commit_independently(store: DuckDBStore, tmp_path: Path) -> None:
    """A file larger than one batch is written in several transactions and fully ingested."""
    source = tmp_path / "many.jsonl"
    source.write_bytes(jsonl(*[mem(f"m{i}", f"memory number {i}") for i in range(250)]))
    with source.open("rb") as stream:
        got = ingest_jsonl(store, stream, location="many", settings=IngestSettings(batch_size=100))
    assert got.ingested == 250
    assert store.execute("SELECT count(*) FROM memories") == [(250,)]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    """A file that does not exist is reported in one line, exit 1, no traceback."""
    result = run_cli("ingest", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_sample_data_ingests_cleanly() -> None:
    """The committed sample set is at least 500 valid memories over about six weeks."""
    result = run_cli("ingest", str(SAMPLES), "--json")
    assert result.returncode == 0, result.stderr
    got = counts(result.stdout)
    assert got["ingested"] >= 500 and got["quarantined"] == 0
