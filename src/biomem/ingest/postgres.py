"""Incremental ingest from a PostgreSQL table by an (updated_at, id) watermark.

Rows are read in keyset order, one bounded batch per query, so a table of any
size streams in constant memory. Each batch and the watermark it reaches
commit to DuckDB in one transaction: a crash between batches resumes exactly
after the last committed one, and a crash inside a batch replays it, which
the idempotent merge absorbs.

Reading from PostgreSQL and writing to DuckDB are apart: a batch is fetched
holding nothing, and only its commit takes ``commit_lock`` (the daemon's
pipeline lock), so a PostgreSQL that does not answer keeps ingest waiting and
never the stages that read DuckDB. One ingest of a source runs at a time (the
caller's to ensure): the watermark read at the start is then still the
latest at every commit.

Known limit: a row whose transaction commits after the watermark has moved
past its ``updated_at`` is not seen until it is updated again; keep
``updated_at`` set by the writer at commit time (a trigger) where that matters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from biomem.clients.postgres import PostgresClient
from biomem.config import IngestSettings, PostgresSourceSettings
from biomem.ingest.records import InvalidRecord, Memory, Rejected, excerpt, validate_record
from biomem.ingest.writer import IngestCounts, write_batch
from biomem.logging import get_logger
from biomem.resilience.errors import DatabaseQueryError
from biomem.store import DuckDBStore

__all__ = ["PostgresSource", "Watermark", "ingest_postgres", "read_watermark"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Watermark:
    """The (updated_at, id) of the last row read from a source."""

    updated_at: datetime
    last_id: str


def read_watermark(store: DuckDBStore, source_name: str) -> Watermark | None:
    row = store.fetchone(
        "SELECT updated_at, last_id FROM ingest_watermarks WHERE source_name = ?", [source_name]
    )
    return None if row is None else Watermark(row[0], str(row[1]))


class PostgresSource:
    """The memories table of one PostgreSQL database, as configured."""

    def __init__(self, client: PostgresClient, settings: PostgresSourceSettings) -> None:
        self._client = client
        self._cfg = settings
        schema, _, table = settings.table.rpartition(".")
        self._table = sql.Identifier(schema or "public", table)
        self.name = f"postgres:{schema or 'public'}.{table}"
        self._query_first: sql.Composed | None = None
        self._query_next: sql.Composed | None = None

    def _prepare(self) -> None:
        """Build the keyset queries from the table's actual column types."""
        if self._query_first is not None:
            return
        cfg = self._cfg
        rows = self._client.run(
            lambda conn: conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
                " FROM pg_attribute a WHERE a.attrelid = %s::regclass"
                " AND a.attnum > 0 AND NOT a.attisdropped",
                [self._table.as_string(conn)],
            ).fetchall(),
            operation="describe_source",
        )
        columns = {str(name): (str(kind), bool(notnull)) for name, kind, notnull in rows}
        wanted = [
            cfg.id_column,
            cfg.content_column,
            cfg.created_at_column,
            cfg.updated_at_column,
            cfg.metadata_column,
        ]
        missing = [name for name in wanted if name not in columns]
        if missing:
            raise DatabaseQueryError(
                "postgresql", f"{self.name} has no column(s) {', '.join(missing)}"
            )
        ident = sql.Identifier(cfg.id_column)
        updated: sql.Composable = sql.Identifier(cfg.updated_at_column)
        if not columns[cfg.updated_at_column][1]:
            # A NULL updated_at would never pass the keyset test: fall back to created_at.
            updated = sql.SQL("COALESCE({}, {})").format(
                updated, sql.Identifier(cfg.created_at_column)
            )
        id_type = sql.SQL(columns[cfg.id_column][0])  # from the catalogue, not user input
        # Output columns get names of their own: ORDER BY prefers an output column to a
        # table column of the same name, and "id" must sort as the table's column (the
        # type the keyset WHERE compares), not as its text (10 before 9: rows skipped).
        select = sql.SQL(
            "SELECT {id}::text AS biomem_id, convert_to({content}::text, 'UTF8') AS biomem_content,"
            " {created} AS biomem_created, {updated} AS biomem_updated,"
            " {metadata} AS biomem_metadata FROM {table}"
        ).format(
            id=ident,
            content=sql.Identifier(cfg.content_column),
            created=sql.Identifier(cfg.created_at_column),
            updated=updated,
            metadata=sql.Identifier(cfg.metadata_column),
            table=self._table,
        )
        order = sql.SQL(" ORDER BY {updated}, {id} LIMIT %s").format(updated=updated, id=ident)
        self._query_first = select + order
        self._query_next = (
            select
            + sql.SQL(" WHERE ({updated}, {id}) > (%s, %s::{type})").format(
                updated=updated, id=ident, type=id_type
            )
            + order
        )

    def fetch(self, after: Watermark | None, limit: int) -> list[tuple[Any, ...]]:
        """Return up to ``limit`` rows after ``after`` in (updated_at, id) order."""
        self._prepare()
        assert self._query_first is not None and self._query_next is not None
        first, following = self._query_first, self._query_next
        if after is None:
            return self._client.run(
                lambda conn: conn.execute(first, [limit]).fetchall(), operation="fetch_memories"
            )
        params = [after.updated_at, after.last_id, limit]
        # A read: safe to retry whole.
        return self._client.run(
            lambda conn: conn.execute(following, params).fetchall(), operation="fetch_memories"
        )


def _to_record(
    row: tuple[Any, ...], *, source_name: str, max_content_bytes: int
) -> Memory | Rejected:
    row_id, content_bytes, created_at, updated_at, metadata = row
    location = f"{source_name} id={row_id}"
    try:
        if content_bytes is None:
            raise InvalidRecord("no content")
        try:
            content = bytes(content_bytes).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecord(f"invalid UTF-8 at byte {exc.start}") from None
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except json.JSONDecodeError:
                raise InvalidRecord("metadata is not valid JSON") from None
        return validate_record(
            source="postgres",
            source_id=row_id,
            content=content,
            created_at=created_at,
            updated_at=updated_at,
            metadata=metadata,
            max_content_bytes=max_content_bytes,
        )
    except InvalidRecord as exc:
        raw = {
            "id": row_id,
            "content": excerpt(bytes(content_bytes)) if content_bytes is not None else None,
            "created_at": str(created_at),
            "updated_at": str(updated_at),
            "metadata": metadata if isinstance(metadata, dict | list | str) else None,
        }
        return Rejected(
            source="postgres",
            location=location,
            record_id=str(row_id),
            reason=str(exc),
            raw=excerpt(json.dumps(raw, ensure_ascii=False, default=str)),
        )


def ingest_postgres(
    store: DuckDBStore,
    source: PostgresSource,
    *,
    settings: IngestSettings,
    max_batches: int | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    should_stop: Callable[[], bool] = lambda: False,
    commit_lock: AbstractContextManager[object] | None = None,
) -> IngestCounts:
    """Read everything past the watermark, batch by batch, until caught up.

    Args:
        max_batches: stop after this many batches (the rest waits for the next run).
        should_stop: checked between batches; True ends the run at a batch boundary.
        commit_lock: held around each batch's commit, never around a fetch.
    """
    lock = commit_lock if commit_lock is not None else nullcontext()
    total = IngestCounts()
    watermark = read_watermark(store, source.name)
    batches = 0
    while not should_stop() and (max_batches is None or batches < max_batches):
        rows = source.fetch(watermark, settings.batch_size)
        if not rows:
            break
        memories: list[Memory] = []
        rejected: list[Rejected] = []
        for row in rows:
            record = _to_record(
                row, source_name=source.name, max_content_bytes=settings.max_content_bytes
            )
            (memories if isinstance(record, Memory) else rejected).append(record)  # type: ignore[arg-type]
        last = rows[-1]
        last_updated = last[3] if last[3] is not None else last[2]
        if last_updated.tzinfo is None:
            last_updated = last_updated.replace(tzinfo=UTC)
        watermark = Watermark(last_updated, str(last[0]))
        now = wall_clock()
        # The batch and the watermark it reaches commit together: a crash in
        # between would otherwise skip the batch or read it twice.
        with lock, store.transaction() as con:
            counts = write_batch(con, memories, rejected, now=now)
            con.execute(
                "INSERT INTO ingest_watermarks (source_name, updated_at, last_id, rows_read,"
                " advanced_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_name) DO UPDATE"
                " SET updated_at = excluded.updated_at, last_id = excluded.last_id,"
                " rows_read = ingest_watermarks.rows_read + excluded.rows_read,"
                " advanced_at = excluded.advanced_at",
                [source.name, watermark.updated_at, watermark.last_id, len(rows), now],
            )
        total.add(counts)
        batches += 1
        log.debug("ingest_batch", source=source.name, rows=len(rows), **counts.as_dict())
        if len(rows) < settings.batch_size:
            break
    return total
