"""Ingest from JSON Lines: a file or standard input, one memory per line.

Lines are read with a length cap, so one runaway line costs bounded memory
and is quarantined rather than loaded. Each batch commits on its own: an
interrupted ingest keeps what it wrote, and running it again is harmless
because writing is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

from biomem.config import IngestSettings
from biomem.ingest.records import Memory, Rejected, excerpt, parse_jsonl_line
from biomem.ingest.writer import IngestCounts, write_batch
from biomem.logging import get_logger
from biomem.store import DuckDBStore

__all__ = ["ingest_jsonl", "max_line_bytes"]

log = get_logger(__name__)


def max_line_bytes(max_content_bytes: int) -> int:
    """The longest line read whole: JSON escapes may grow content up to 6×."""
    return max(6 * max_content_bytes, 1 << 20) + (64 << 10)


def ingest_jsonl(
    store: DuckDBStore,
    stream: BinaryIO,
    *,
    location: str,
    settings: IngestSettings,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> IngestCounts:
    """Read ``stream`` to its end, writing memories and quarantining bad lines.

    Args:
        store: the open store.
        stream: a binary stream of JSON Lines.
        location: how quarantine rows name the input (a path or ``stdin``).
        settings: batch size and record limits.
        wall_clock: the time stamped on rows (people read it).
    """
    cap = max_line_bytes(settings.max_content_bytes)
    total = IngestCounts()
    memories: list[Memory] = []
    rejected: list[Rejected] = []

    def flush() -> None:
        with store.transaction() as con:
            counts = write_batch(con, memories, rejected, now=wall_clock())
        total.add(counts)
        log.debug("ingest_batch", location=location, **counts.as_dict())
        memories.clear()
        rejected.clear()

    line_no = 0
    while True:
        raw = stream.readline(cap)
        if not raw:
            break
        line_no += 1
        if len(raw) >= cap and not raw.endswith(b"\n"):
            # Too long to hold: keep an excerpt, skip the rest of the line.
            head = raw
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(cap)
            rejected.append(
                Rejected(
                    source="jsonl",
                    location=f"{location}:{line_no}",
                    line_no=line_no,
                    reason=f"line longer than {cap} bytes",
                    raw=excerpt(head),
                )
            )
        else:
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark some editors write
            if raw.strip():
                parsed = parse_jsonl_line(
                    raw.rstrip(b"\r\n"),
                    line_no=line_no,
                    location=location,
                    max_content_bytes=settings.max_content_bytes,
                )
                if isinstance(parsed, Memory):
                    memories.append(parsed)
                else:
                    rejected.append(parsed)
        if len(memories) + len(rejected) >= settings.batch_size:
            flush()
    if memories or rejected:
        flush()
    return total
