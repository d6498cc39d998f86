"""Validation of raw records: every kind of bad record gets a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from biomem.ingest.records import (
    EXCERPT_BYTES,
    InvalidRecord,
    Memory,
    Rejected,
    parse_jsonl_line,
    validate_record,
)

LIMIT = 65536


def parse(raw: bytes) -> Memory | Rejected:
    return parse_jsonl_line(raw, line_no=7, location="in.jsonl", max_content_bytes=LIMIT)


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_valid_line_becomes_memory() -> None:
    """A complete line becomes a memory with UTC times and canonical metadata."""
    got = parse(
        line(
            id="m-1",
            content="Met Ana about the launch",
            created_at="2026-10-05T09:00:00+02:00",
            metadata={"b": 1, "a": [1, 2]},
        )
    )
    assert isinstance(got, Memory)
    assert got.uid == "jsonl:m-1"
    assert got.created_at == datetime(2026, 10, 5, 7, 0, tzinfo=UTC)
    assert got.updated_at == got.created_at
    assert got.metadata_json == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b'{"id":"x","created_at":"2026-10-05T09:00:00Z"}', "no content", id="missing"),
        pytest.param(
            line(id="x", content="   ", created_at="2026-10-05"), "no content", id="blank"
        ),
        pytest.param(
            line(id="x", content=5, created_at="2026-10-05"), "content is int", id="number"
        ),
        pytest.param(b'{"id": "x", "content": "a\xff"}', "invalid UTF-8", id="bad-utf8"),
        pytest.param(b'{"id": "x", "content": "a"', "malformed JSON", id="truncated"),
        pytest.param(b"[1, 2]", "a line must hold a JSON object", id="array"),
        pytest.param(line(id="x", content="a"), "missing created_at", id="no-time"),
        pytest.param(
            line(id="x", content="a", created_at="last tuesday"), "bad timestamp", id="bad-time"
        ),
        pytest.param(
            line(id="x", content="a", created_at="2026-10-05", updated_at="soon"),
            "bad timestamp in updated_at",
            id="bad-updated",
        ),
        pytest.param(
            line(id="x", content="a", created_at="1066-10-14T09:00:00Z"),
            "outside 1900..2200",
            id="ancient",
        ),
        pytest.param(
            line(id="x", content="a", created_at="2026-10-05", metadata=[1]),
            "metadata is list",
            id="metadata-list",
        ),
        pytest.param(
            b'{"id":"x","content":"a\\ud800b","created_at":"2026-10-05"}',
            "lone surrogate",
            id="surrogate",
        ),
        pytest.param(line(id="x", content="a\x00b", created_at="2026-10-05"), "NUL", id="nul"),
        pytest.param(
            line(id=True, content="a", created_at="2026-10-05"), "id is bool", id="id-bool"
        ),
        pytest.param(
            line(id="", content="a", created_at="2026-10-05"), "id is empty", id="id-empty"
        ),
    ],
)
def test_bad_lines_are_rejected_with_reason(raw: bytes, reason: str) -> None:
    """Each kind of bad line is rejected with a reason naming the problem and its line."""
    got = parse(raw)
    assert isinstance(got, Rejected)
    assert reason in got.reason
    assert got.location == "in.jsonl:7"
    assert got.line_no == 7


def test_content_over_limit_is_rejected() -> None:
    """Content over the byte limit is rejected, counting UTF-8 bytes, not characters."""
    content = "é" * (LIMIT // 2 + 1)  # 2 bytes each
    got = parse(line(id="big", content=content, created_at="2026-10-05"))
    assert isinstance(got, Rejected)
    assert f"over the limit of {LIMIT}" in got.reason
    assert got.record_id == "big"
    assert len(got.raw.encode()) <= EXCERPT_BYTES + 8


def test_content_at_limit_is_accepted() -> None:
    """Content of exactly the limit is accepted."""
    got = parse(line(id="edge", content="a" * LIMIT, created_at="2026-10-05"))
    assert isinstance(got, Memory)


def test_missing_id_is_derived_deterministically() -> None:
    """A line without id gets the same derived id every time, so re-ingest is idempotent."""
    raw = line(content="no id here", created_at="2026-10-05T10:00:00Z")
    first, second = parse(raw), parse(raw)
    assert isinstance(first, Memory) and isinstance(second, Memory)
    assert first.source_id == second.source_id
    assert first.source_id.startswith("h-")


def test_unknown_keys_are_kept_in_metadata() -> None:
    """Unknown top-level keys are kept in the metadata, never dropped; metadata keys win."""
    got = parse(
        line(id=1, content="a", created_at="2026-10-05", mood="calm", metadata={"mood": "tense"})
    )
    assert isinstance(got, Memory)
    assert json.loads(got.metadata_json) == {"mood": "tense"}
    got = parse(line(id=1, content="a", created_at="2026-10-05", mood="calm"))
    assert isinstance(got, Memory)
    assert json.loads(got.metadata_json) == {"mood": "calm"}
    assert got.source_id == "1"


def test_naive_and_epoch_times_are_utc() -> None:
    """Times without an offset are read as UTC; numbers are Unix seconds."""
    naive = parse(line(id="a", content="a", created_at="2026-10-05T10:00:00"))
    epoch = parse(line(id="b", content="a", created_at=1_790_000_000))
    assert isinstance(naive, Memory) and isinstance(epoch, Memory)
    assert naive.created_at == datetime(2026, 10, 5, 10, tzinfo=UTC)
    assert epoch.created_at == datetime.fromtimestamp(1_790_000_000, UTC)


def test_hash_ignores_updated_at_but_not_content() -> None:
    """A touch of updated_at alone is no change; a change of content or metadata is."""
    base = {
        "source": "postgres",
        "source_id": 1,
        "created_at": "2026-10-05",
        "max_content_bytes": LIMIT,
    }
    a = validate_record(content="x", updated_at="2026-10-06", metadata={}, **base)
    b = validate_record(content="x", updated_at="2026-10-07", metadata={}, **base)
    c = validate_record(content="y", updated_at="2026-10-07", metadata={}, **base)
    d = validate_record(content="x", updated_at="2026-10-07", metadata={"k": 1}, **base)
    assert a.content_hash == b.content_hash
    assert len({a.content_hash, c.content_hash, d.content_hash}) == 3


def test_validate_record_raises_invalid_record() -> None:
    """Programmatic callers get InvalidRecord, a ValueError, with the reason."""
    with pytest.raises(InvalidRecord, match="no content"):
        validate_record(
            source="postgres",
            source_id=1,
            content=None,
            created_at="2026-10-05",
            updated_at=None,
            metadata=None,
            max_content_bytes=LIMIT,
        )
