"""Ingest: memories from PostgreSQL or JSON Lines into the embedded store."""

from __future__ import annotations

from biomem.ingest.jsonl import ingest_jsonl, max_line_bytes
from biomem.ingest.postgres import PostgresSource, Watermark, ingest_postgres, read_watermark
from biomem.ingest.records import InvalidRecord, Memory, Rejected, parse_jsonl_line, validate_record
from biomem.ingest.writer import IngestCounts, write_batch

__all__ = [
    "IngestCounts",
    "InvalidRecord",
    "Memory",
    "PostgresSource",
    "Rejected",
    "Watermark",
    "ingest_jsonl",
    "ingest_postgres",
    "max_line_bytes",
    "parse_jsonl_line",
    "read_watermark",
    "validate_record",
    "write_batch",
]
