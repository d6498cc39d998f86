"""Data sets for the scenarios: sample memories as JSONL, and a live PostgreSQL source table.

:class:`SourceTable` is ``public.memories`` in a database the test owns. Its
producer inserts memories from a thread the whole time a scenario runs, as an
application writing memories would, and simply retries while PostgreSQL is
away; whatever the table holds at the end is the truth the store is checked
against.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import SAMPLES

__all__ = ["Backends", "SourceTable", "jsonl_dataset", "sample_records"]

_START = datetime(2026, 10, 5, 6, 0, tzinfo=UTC)


@cache
def sample_records() -> tuple[dict[str, Any], ...]:
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines)


def jsonl_dataset(directory: Path, count: int) -> tuple[Path, set[str]]:
    """The first ``count`` sample memories as a JSONL file, and their store uids."""
    records = sample_records()[:count]
    path = directory / f"memories-{count}.jsonl"
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path, {f"jsonl:{r['id']}" for r in records}


def _row(number: int) -> tuple[int, str, datetime, str]:
    record = sample_records()[number % len(sample_records())]
    metadata = json.dumps(record.get("metadata") or {})
    return number, f"{record['content']} (#{number})", _START + timedelta(minutes=number), metadata


class SourceTable:
    """``public.memories`` of the database at ``url``, and a producer adding to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.next_id = 1
        self.insert_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.memories (id bigint PRIMARY KEY,"
                " content text, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,"
                " metadata jsonb)"
            )

    def insert(self, count: int) -> None:
        """Insert ``count`` good memories in one transaction (raises while PostgreSQL is away)."""
        rows = [_row(n) for n in range(self.next_id, self.next_id + count)]
        with psycopg.connect(self.url, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.memories VALUES (%s, %s, %s, now(), %s::jsonb)"
                " ON CONFLICT (id) DO NOTHING",
                rows,
            )
        self.next_id += count

    def insert_raw(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows as given: (id, content, created_at, metadata as JSON text)."""
        with psycopg.connect(self.url) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.memories VALUES (%s, %s, %s, now(), %s::jsonb)", rows
            )

    def start_producer(self, *, every_s: float = 0.25, batch: int = 5) -> None:
        """Keep inserting ``batch`` memories every ``every_s`` until :meth:`stop_producer`."""

        def produce() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.insert(batch)
                except psycopg.Error:
                    # PostgreSQL is away: the application retries later; nothing
                    # was committed (or, if the commit's answer was lost, the
                    # table says so at the end, which is what is checked).
                    self.insert_failures += 1

        self._stop.clear()
        self._thread = threading.Thread(target=produce, name="pg-producer", daemon=True)
        self._thread.start()

    def stop_producer(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def stop(self) -> None:
        """Teardown: the producer ends."""
        self.stop_producer()

    def uids(self) -> set[str]:
        """The store uids of every memory the table holds now."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            ids = conn.execute("SELECT id::text FROM public.memories").fetchall()
        return {f"postgres:{row[0]}" for row in ids}


class Backends:
    """biomem's connections to one database, seen through one connection of our own."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def now(self) -> list[tuple[int, str, str]]:
        """(pid, state, query) of each biomem connection to this database."""
        rows = self._conn.execute(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity"
            " WHERE application_name = 'biomem' AND datname = current_database()"
        ).fetchall()
        return [(int(pid), str(state), str(query)) for pid, state, query in rows]

    def terminate(self) -> int:
        """pg_terminate_backend on each biomem connection to this database; how many."""
        row = self._conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'biomem' AND datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        self._conn.close()
