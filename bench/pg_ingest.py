"""Benchmark: PostgreSQL ingest time and peak memory at 100k and 1M rows.

Each measurement runs in its own child process and reads that child's peak
RSS from ``os.wait4``. The peer is the naive way to read a table — one
``SELECT`` fetched whole — which shows what bounded batches save.

Run:  .venv/bin/python bench/pg_ingest.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
          [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

NAIVE = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute(
        "SELECT id::text, content, created_at, updated_at, metadata FROM public.memories"
        " ORDER BY updated_at, id"
    ).fetchall()
    sys.stdout.write(str(len(rows)))
"""


def run_child(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child; return (seconds, peak RSS MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {args}")
    return seconds, usage.ru_maxrss / 1024, out


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.memories")
        conn.execute(
            "CREATE TABLE public.memories (id bigint PRIMARY KEY, content text NOT NULL,"
            " created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, metadata jsonb)"
        )
        conn.execute(
            "INSERT INTO public.memories SELECT g,"
            " 'Memory ' || g || ': met with the platform team about the migration plan,"
            " then reviewed the launch checklist and noted two open questions for Ana.',"
            " timestamptz '2026-10-05' + g * interval '1 second',"
            " timestamptz '2026-10-05' + g * interval '1 second',"
            " jsonb_build_object('importance', (g %% 100) / 100.0, 'topics',"
            " jsonb_build_array('work', 'migration'))"
            " FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute("CREATE INDEX ON public.memories (updated_at, id)")
        conn.execute("ANALYZE public.memories")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    dbname = f"biomem_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = urlunsplit(urlsplit(args.url)._replace(path=f"/{dbname}"))
    print(
        "| rows | biomem ingest s | rows/s | biomem peak RSS MiB | naive fetchall peak RSS MiB"
        " | RSS ratio naive/biomem |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    try:
        for rows in args.sizes:
            fill(url, rows)
            with tempfile.TemporaryDirectory() as tmp:
                env = {
                    **os.environ,
                    "POSTGRES_DB_URL": url,
                    "DUCKDB_PATH": str(Path(tmp) / "bench.duckdb"),
                    "BIOMEM_LOG_LEVEL": "warning",
                }
                seconds, rss, out = run_child(
                    [sys.executable, "-m", "biomem", "ingest", "--postgres", "--json"], env
                )
                assert f'"ingested": {rows}' in out, out
            _, naive_rss, naive_out = run_child(
                [sys.executable, "-c", NAIVE, url], dict(os.environ)
            )
            assert naive_out == str(rows)
            print(
                f"| {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} | {rss:.0f} | {naive_rss:.0f}"
                f" | {naive_rss / rss:.2f} |",
                flush=True,
            )
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


if __name__ == "__main__":
    main()
