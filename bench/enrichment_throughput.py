"""Benchmark: short-term enrichment throughput through the LLM, against its concurrency limit.

The fake Ollama of ``tests/fakes/ollama.py`` answers every request after a fixed
latency (``set_latency``), so with ``OLLAMA_MAX_CONCURRENCY = c`` no client can
enrich more than c / latency memories a second (20/s, 80/s, 320/s at 50 ms for
c = 1, 4, 16). For each c, M synthetic memories go into a fresh DuckDB store and
the real short_term stage runs through ``run_stage`` with the Ollama client of
``ollama_factory(settings)``; settings come from the environment
(``OLLAMA_URL``, ``OLLAMA_MAX_CONCURRENCY``) via ``load_settings()``.

What is measured (the episode SQL at the end of the stage is excluded):

* enrichment: from the stage's start to its last progress report, i.e. the
  run record, the probe (``/api/tags``, one latency), the count query and
  every batch (query, LLM calls, write);
* steady state: between the first and the last progress report, i.e. whole
  batches only;
* SQL: seconds inside the store (batch query, batch write with commit), from a
  ``DuckDBStore`` subclass that adds them up; CPU: the process's user+system
  seconds over the run (the in-thread fake shares this process and its GIL).

The peer, run in the same process against the same fake: the same Ollama
client, LLMSession and parser driven by c workers that each take the next
memory as soon as their call returns — no batches, no DuckDB — i.e. the best
the client itself can do at this concurrency on this machine; once over the
product's transport (``biomem.clients.http11``) and once over httpx's default
one (httpcore), which the product used before.

``--fake process`` runs the fake as its own process (``python -m tests.fakes.ollama``)
so its request handling does not compete with the client for this process's GIL.
``--batch-sizes`` adds runs with other ``[pipeline.short_term] batch_size`` values.
The store and the client go through the product's resilience policies
(``biomem.guards.build_guards``, as ``biomem.app`` wires them); ``--no-policy``
leaves them out, to see what they cost.

Run:  .venv/bin/python bench/enrichment_throughput.py [--concurrency 1 4 16]
          [--memories 400 1000 1000] [--latency 0.05] [--batch-sizes 64] [--fake thread]
          [--repeat 3] [--no-policy] [--stub-sniffio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fakes.ollama

from tests.fakes.ollama import FakeOllama  # noqa: E402

from biomem.clients.http11 import ollama_http_client  # noqa: E402
from biomem.config import Settings, load_settings  # noqa: E402
from biomem.config.environment import LogLevel  # noqa: E402
from biomem.guards import build_guards  # noqa: E402
from biomem.logging import configure_logging  # noqa: E402
from biomem.pipeline.enrichment import (  # noqa: E402
    ENRICHMENT_SCHEMA,
    build_enrichment_messages,
    parse_enrichment,
)
from biomem.pipeline.llm import LLMSession  # noqa: E402
from biomem.pipeline.runner import STAGES, ollama_factory, run_stage  # noqa: E402
from biomem.store import DuckDBStore  # noqa: E402

# M memories, one every 40 s, in sessions of about ten sharing topics and a person.
GENERATE = """
INSERT INTO memories
SELECT 'jsonl:enrich-' || i, 'jsonl', 'enrich-' || i,
       ['Ana', 'Ben', 'Chen', 'Dara'][1 + i % 4] || ' and I '
       || ['reviewed', 'planned', 'fixed', 'discussed', 'drafted'][1 + i % 5] || ' the '
       || ['deploy', 'hiring', 'budget', 'design', 'garden', 'travel'][1 + (i // 10) % 6]
       || ' ' || ['plan', 'checklist', 'notes', 'report'][1 + i % 4]
       || '; felt ' || ['happy', 'tired', 'worried', 'proud', 'calm'][1 + i % 5] || ' about it.',
       ts, ts,
       json_object('importance', (i % 100) / 100.0, 'emotional_valence', (i % 21 - 10) / 10.0,
                   'topics', [['deploy', 'hiring', 'budget', 'design', 'garden', 'travel']
                              [1 + (i // 10) % 6]],
                   'people', [['Ana', 'Ben', 'Chen', 'Dara'][1 + i % 4]]),
       md5(CAST(i AS VARCHAR)), 1, true, ts, ts
FROM (SELECT range AS i,
             TIMESTAMPTZ '2026-11-01 08:00:00+00' + to_seconds(range * 40) AS ts
      FROM range($m))
"""


class SqlTimedStore(DuckDBStore):
    """A DuckDBStore that adds up the seconds spent in it (bench only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_seconds = 0.0
        self.write_seconds = 0.0
        self.writes = 0

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        start = time.perf_counter()
        try:
            with super().transaction() as con:
                yield con
        finally:
            spent = time.perf_counter() - start
            self.sql_seconds += spent
            self.write_seconds += spent
            self.writes += 1

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        start = time.perf_counter()
        try:
            return super().execute(sql, params)
        finally:
            self.sql_seconds += time.perf_counter() - start

    def fetchone(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> tuple[Any, ...] | None:
        start = time.perf_counter()
        try:
            return super().fetchone(sql, params)
        finally:
            self.sql_seconds += time.perf_counter() - start


@dataclass(slots=True)
class Measurement:
    concurrency: int
    batch_size: int
    memories: int
    enriched: int
    llm: int
    enrich_s: float
    steady_rate: float
    sql_s: float
    write_s: float
    writes: int
    cpu_s: float
    chat_requests: int | None

    def limit(self, latency: float) -> float:
        return self.concurrency / latency


class FakeProcess:
    """The fake Ollama as its own process (its CLI entry point)."""

    def __init__(self, latency: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.ollama", "--port", "0", "--latency", str(latency)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self._proc.kill()
            raise SystemExit(f"fake Ollama did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        self.pid = self._proc.pid

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def _settings(url: str, concurrency: int, batch_size: int) -> Settings:
    os.environ["OLLAMA_URL"] = url
    os.environ["OLLAMA_MAX_CONCURRENCY"] = str(concurrency)
    settings: Settings = load_settings()
    pipeline = settings.pipeline
    short_term = pipeline.short_term.model_copy(update={"batch_size": batch_size})
    return settings.model_copy(
        update={"pipeline": pipeline.model_copy(update={"short_term": short_term})}
    )


async def _client_only(
    settings: Settings, memories: int, *, policies: bool, transport: str
) -> float:
    """The peer: the same client, session and parser, c workers, no batches, no store.

    ``transport``: "lean", the product's (``ollama_http_client``), or "httpcore",
    httpx's default transport, which the product used before 2026-12-07.
    """
    guards = build_guards(settings) if policies else None
    todo = [
        build_enrichment_messages(
            f"Ana and I reviewed the budget plan number {i}; felt calm about it.",
            created_at_iso="2026-11-01T08:00:00+00:00",
            metadata_json='{"importance": 0.5, "topics": ["budget"], "people": ["Ana"]}',
        )
        for i in range(memories)
    ]
    http = ollama_http_client() if transport == "lean" else httpx.AsyncClient()
    async with http:
        client = ollama_factory(settings, guards.ollama if guards else None)(http)
        session = LLMSession(client, max_concurrency=settings.ollama.max_concurrency)
        await session.probe()

        async def worker() -> None:
            while todo:
                messages = todo.pop()
                outcome = await session.call(
                    lambda c, m=messages: c.chat_json(m, schema=ENRICHMENT_SCHEMA)
                )
                assert outcome.value is not None, outcome.error
                parse_enrichment(outcome.value)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(settings.ollama.max_concurrency)))
        return memories / (time.perf_counter() - started)


def measure_peer(
    url: str, *, concurrency: int, memories: int, policies: bool, transport: str = "lean"
) -> float:
    settings = _settings(url, concurrency, 64)
    return asyncio.run(_client_only(settings, memories, policies=policies, transport=transport))


def measure(
    url: str,
    *,
    concurrency: int,
    batch_size: int,
    memories: int,
    fake: FakeOllama | None,
    policies: bool,
) -> Measurement:
    settings = _settings(url, concurrency, batch_size)
    # As the product wires it (biomem.app): store and Ollama client through their policies.
    guards = build_guards(settings) if policies else None
    with tempfile.TemporaryDirectory(prefix="biomem-enrich-") as tmp:
        store = SqlTimedStore.open(
            Path(tmp) / "bench.duckdb", policy=guards.duckdb if guards else None
        )
        assert isinstance(store, SqlTimedStore)
        try:
            with store.transaction() as con:
                con.execute(GENERATE, {"m": memories})
            row = store.fetchone("SELECT max(created_at) + INTERVAL 1 MINUTE FROM memories")
            assert row is not None
            store.sql_seconds = store.write_seconds = 0.0
            store.writes = 0
            if fake is not None:
                fake.clear_history()
            reports: list[tuple[float, int]] = []
            sql_at_last: list[tuple[float, float, int]] = [(0.0, 0.0, 0)]

            def progress(done: int, total: int) -> None:
                reports.append((time.perf_counter(), done))
                # The store's totals up to this batch: the episode SQL after it is left out.
                sql_at_last[0] = (store.sql_seconds, store.write_seconds, store.writes)

            cpu = psutil.Process().cpu_times()
            started = time.perf_counter()
            outcome = run_stage(
                store,
                settings,
                STAGES["short_term"],
                as_of=row[0],
                ollama=ollama_factory(settings, guards.ollama if guards else None),
                stop=threading.Event(),
                progress=progress,
            )
            after = psutil.Process().cpu_times()
        finally:
            store.close()
    if outcome.error:
        raise SystemExit(f"short_term failed: {outcome.error}")
    assert reports, "no batch was reported"
    (t_first, n_first), (t_last, n_last) = reports[0], reports[-1]
    steady = (n_last - n_first) / (t_last - t_first) if len(reports) > 1 else float("nan")
    # Whatever the store did after the last batch (episodes, run record) is not enrichment.
    return Measurement(
        concurrency=concurrency,
        batch_size=batch_size,
        memories=memories,
        enriched=outcome.result.items,
        llm=outcome.result.llm,
        enrich_s=t_last - started,
        steady_rate=steady,
        sql_s=sql_at_last[0][0],
        write_s=sql_at_last[0][1],
        writes=sql_at_last[0][2],
        cpu_s=(after.user + after.system) - (cpu.user + cpu.system),
        chat_requests=fake.request_count("/api/chat") if fake is not None else None,
    )


def stub_sniffio() -> None:
    """Diagnostic: what an installed ``sniffio`` would give httpcore (see --stub-sniffio)."""
    module = types.ModuleType("sniffio")
    module.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
    sys.modules["sniffio"] = module


def _median(runs: list[Measurement]) -> Measurement:
    return sorted(runs, key=lambda m: m.enriched / m.enrich_s)[len(runs) // 2]


def _median_value(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--memories", type=int, nargs="+", default=[400, 1000, 1000], help="one per concurrency"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="fake Ollama seconds/answer")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--fake", choices=("thread", "process"), default="thread")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; median shown")
    parser.add_argument("--target", type=float, default=0.85, help="fraction of the limit")
    parser.add_argument(
        "--no-policy",
        action="store_true",
        help="store and Ollama client without the resilience policies (the product uses them)",
    )
    parser.add_argument(
        "--stub-sniffio",
        action="store_true",
        help="diagnostic: give httpcore a 'sniffio' module (it retries a failing import per call)",
    )
    args = parser.parse_args()
    if len(args.memories) != len(args.concurrency):
        parser.error("--memories needs one value per --concurrency value")
    configure_logging(level=LogLevel.ERROR)
    for name in ("BIOMEM_CONFIG_FILE", "OLLAMA_MODEL", "OLLAMA_TIMEOUT_SECONDS"):
        os.environ.pop(name, None)  # the defaults: llama3.2, 60 s
    if args.stub_sniffio:
        stub_sniffio()
    print(
        f"cores {os.cpu_count()}, python {sys.version.split()[0]}, duckdb {duckdb.__version__},"
        f" fake Ollama in a {args.fake}, latency {args.latency * 1000:.0f} ms,"
        f" policies {'off' if args.no_policy else 'on (build_guards)'},"
        f" sniffio {'stubbed' if args.stub_sniffio else 'as installed'},"
        f" load average at start {os.getloadavg()[0]:.2f}, median of {args.repeat}"
    )
    fake: FakeOllama | None = None
    process: FakeProcess | None = None
    if args.fake == "thread":
        fake = FakeOllama().start()
        fake.set_latency(args.latency)
        url = fake.url
    else:
        process = FakeProcess(args.latency)
        url = process.url
    rows: list[tuple[Measurement, list[float]]] = []
    peers: dict[int, list[float]] = {}
    old_peers: dict[int, list[float]] = {}
    try:
        for concurrency, memories in zip(args.concurrency, args.memories, strict=True):
            for transport, into in (("lean", peers), ("httpcore", old_peers)):
                into[concurrency] = sorted(
                    measure_peer(
                        url,
                        concurrency=concurrency,
                        memories=memories,
                        policies=not args.no_policy,
                        transport=transport,
                    )
                    for _ in range(args.repeat)
                )
                print(
                    f"  peer c={concurrency} over {transport}: {into[concurrency]}",
                    file=sys.stderr,
                    flush=True,
                )
        for batch_size in args.batch_sizes:
            for concurrency, memories in zip(args.concurrency, args.memories, strict=True):
                runs: list[Measurement] = []
                for _ in range(args.repeat):
                    m = measure(
                        url,
                        concurrency=concurrency,
                        batch_size=batch_size,
                        memories=memories,
                        fake=fake,
                        policies=not args.no_policy,
                    )
                    runs.append(m)
                    print(
                        f"  c={concurrency} batch={batch_size}: {m.enriched / m.enrich_s:.1f}/s",
                        file=sys.stderr,
                        flush=True,
                    )
                rows.append((_median(runs), sorted(r.enriched / r.enrich_s for r in runs)))
    finally:
        if fake is not None:
            fake.stop()
        if process is not None:
            process.stop()
    print(
        "\n| concurrency | batch_size | memories | limit /s | memories/s (range)"
        " | fraction of limit | steady-state /s (fraction) | enrichment s"
        " | SQL s (batches × write ms) | CPU ms / memory | target"
        " | peer: client alone /s (fraction) | stage ÷ peer"
        " | peer: client alone over httpcore /s (fraction) | stage ÷ httpcore peer |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for m, rates in rows:
        limit = m.limit(args.latency)
        peer = _median_value(peers[m.concurrency])
        old_peer = _median_value(old_peers[m.concurrency])
        rate = m.enriched / m.enrich_s
        ok = "met" if rate / limit >= args.target else "**missed**"
        assert m.llm == m.enriched == m.memories, "every memory must be enriched by the LLM"
        print(
            f"| {m.concurrency} | {m.batch_size} | {m.memories:,} | {limit:.0f}"
            f" | {rate:.1f} ({rates[0]:.0f}–{rates[-1]:.0f}) | {rate / limit:.2f}"
            f" | {m.steady_rate:.1f} ({m.steady_rate / limit:.2f}) | {m.enrich_s:.2f}"
            f" | {m.sql_s:.2f} ({m.writes} × {1000 * m.write_s / max(m.writes, 1):.0f})"
            f" | {1000 * m.cpu_s / m.memories:.2f} | {ok}"
            f" | {peer:.1f} ({peer / limit:.2f}) | {rate / peer:.2f}"
            f" | {old_peer:.1f} ({old_peer / limit:.2f}) | {rate / old_peer:.2f} |"
        )
    print(
        "\nIdeal batch time with batch_size b and concurrency c: ceil(b / c) × latency"
        " (a batch waits for its slowest call), plus the batch's SQL, which nothing overlaps."
    )


if __name__ == "__main__":
    main()
