"""Writeback: the pipeline's results, upserted into PostgreSQL schema ``dreams``.

Each run sends the current state of every result table: rows are copied into
a temporary table, upserted where they differ, and rows gone from the state
(pruned associations, replaced neighbours) are deleted, all in one
PostgreSQL transaction per run. Sending state rather than changes makes the
stage idempotent and makes an outage harmless: while PostgreSQL is down the
run is deferred, and the first run after it is back sends everything that
changed meanwhile.

The snapshot is read under the pipeline lock (no stage writes while it is
read), the send happens outside it: a PostgreSQL that does not answer keeps
only writeback waiting, never the stages that need DuckDB alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from biomem.pipeline.base import StageContext, StageResult
from biomem.resilience.errors import DependencyError

__all__ = ["TABLES", "WritebackStage"]

SCHEMA = "dreams"


@dataclass(frozen=True, slots=True)
class Table:
    """One result table: its PostgreSQL shape and the DuckDB query giving its rows."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type)
    key: tuple[str, ...]
    select: str  # DuckDB, columns in the same order

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]


TABLES: tuple[Table, ...] = (
    Table(
        "episodes",
        (
            ("episode_id", "text"),
            ("started_at", "timestamptz"),
            ("ended_at", "timestamptz"),
            ("size", "integer"),
            ("goal", "text"),
            ("topics", "text[]"),
        ),
        ("episode_id",),
        "SELECT episode_id, started_at, ended_at, size, goal, topics FROM episodes",
    ),
    Table(
        "memories",
        (
            ("memory_uid", "text"),
            ("source", "text"),
            ("source_id", "text"),
            ("created_at", "timestamptz"),
            ("episode_id", "text"),
            ("goal", "text"),
            ("tasks", "text[]"),
            ("actions", "text[]"),
            ("entities", "text[]"),
            ("topics", "text[]"),
            ("sentiment", "double precision"),
            ("enrichment_source", "text"),
            ("strength", "double precision"),
            ("replay_strength", "double precision"),
            ("fate", "text"),
        ),
        ("memory_uid",),
        "SELECT m.uid, m.source, m.source_id, m.created_at, em.episode_id, e.goal, e.tasks,"
        " e.actions, e.entities, e.topics, e.sentiment, e.source, s.strength,"
        " s.replay_strength, s.fate"
        " FROM memories m JOIN enrichments e USING (uid)"
        " LEFT JOIN episode_members em USING (uid) LEFT JOIN memory_state s USING (uid)",
    ),
    Table(
        "associations",
        (
            ("a", "text"),
            ("b", "text"),
            ("weight", "double precision"),
            ("coactivations", "integer"),
            ("last_coactivated_at", "timestamptz"),
        ),
        ("a", "b"),
        "SELECT a, b, weight, coactivations, last_coactivated_at FROM associations",
    ),
    Table(
        "semantic_neighbours",
        (("a", "text"), ("b", "text"), ("similarity", "double precision"), ("rank", "integer")),
        ("a", "b"),
        "SELECT a, b, similarity, rank FROM semantic_edges",
    ),
    Table(
        "dreams",
        (
            ("dream_id", "text"),
            ("a", "text"),
            ("b", "text"),
            ("link", "text"),
            ("kind", "text"),
            ("plausibility", "double precision"),
            ("novelty", "double precision"),
            ("kept", "boolean"),
            ("dreamt_at", "timestamptz"),
        ),
        ("dream_id",),
        "SELECT dream_id, a, b, link, kind, plausibility, novelty, kept, dreamt_at FROM dreams",
    ),
    Table(
        "runs",
        (
            ("id", "bigint"),
            ("stage", "text"),
            ("started_at", "timestamptz"),
            ("finished_at", "timestamptz"),
            ("status", "text"),
            ("counts", "jsonb"),
            ("error", "text"),
        ),
        ("id",),
        "SELECT id, stage, started_at, finished_at, status, counts::VARCHAR, error FROM runs",
    ),
)


def _ddl(table: Table) -> sql.Composed:
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in table.columns
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({}))").format(
        sql.Identifier(SCHEMA),
        sql.Identifier(table.name),
        cols,
        sql.SQL(", ").join(map(sql.Identifier, table.key)),
    )


def _sync(cur: Any, table: Table, rows: list[tuple[Any, ...]]) -> None:
    target = sql.Identifier(SCHEMA, table.name)
    stage = sql.Identifier(f"wb_{table.name}")
    names = table.column_names
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
        copy.set_types([kind for _, kind in table.columns])
        for row in rows:
            copy.write_row(row)
    others = [n for n in names if n not in table.key]
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    cur.execute(
        sql.SQL(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
            " ON CONFLICT ({key}) DO UPDATE SET {sets}"
            " WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            target=target,
            cols=cols,
            stage=stage,
            key=key,
            sets=sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in others
            ),
            old=sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier(table.name), sql.Identifier(n))
                for n in others
            ),
            new=sql.SQL(", ").join(
                sql.SQL("excluded.{}").format(sql.Identifier(n)) for n in others
            ),
        )
    )
    match = sql.SQL(" AND ").join(
        sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in table.key
    )
    cur.execute(
        sql.SQL(
            "DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {m})"
        ).format(target=target, stage=stage, m=match)
    )


class WritebackStage:
    """Send results to PostgreSQL (reads every other stage); only with POSTGRES_DB_URL."""

    name = "writeback"
    after: tuple[str, ...] = (
        "short_term",
        "working_memory",
        "consolidation",
        "long_term",
        "homeostasis",
        "dreams",
    )

    def run(self, ctx: StageContext) -> StageResult:
        if ctx.postgres is None:
            return StageResult(detail={"skipped": "POSTGRES_DB_URL is not set"})
        with ctx.pipeline_lock:
            snapshot = {table.name: ctx.store.execute(table.select) for table in TABLES}
        total = sum(len(rows) for rows in snapshot.values())
        try:
            with ctx.postgres.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA))
                )
                for table in TABLES:
                    cur.execute(_ddl(table))
                    _sync(cur, table, snapshot[table.name])
        except DependencyError as exc:
            if not exc.transient:  # the statement or the data: a failed run
                raise
            # The state stays in DuckDB; the next run sends it whole. An open
            # breaker, or every connection busy with calls that wait on the server,
            # is the same outage seen sooner: deferred, not failed.
            return StageResult(deferred=total, detail={"postgres_unavailable": str(exc)})
        return StageResult(items=total, detail={t: len(r) for t, r in snapshot.items()})
