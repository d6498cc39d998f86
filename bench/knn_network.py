"""Benchmark: the semantic network's time, peak memory and recall, exact vs LSH.

For each size N (a child process per size, as in pipeline_sql.py): N synthetic
memories (pipeline_sql.GENERATE), embedded by the real long_term stage with the
lexical fallback (``ollama=None``), whose network step then builds the
approximate network (``exact_max = 0``: LSH at every size). Then the same
vectors get the exact network (all pairs) when N <= --exact-limit, timed the
same way. Recall@k: for Q sample memories (the first Q in hash order), the
exact top k is computed by brute force against all N vectors (Q x N
similarities, cheap at any N) and compared with each network's edges of those
memories: recall = |network ∩ exact| / |exact|, over edges above min_cosine.

Peak RSS: a thread samples the child's RSS every 10 ms (as in pipeline_sql.py).
Each LSH variant given by --variants (bands x window) is built again on the
same vectors (its codes computed again), so the figures compare settings on one
data set.

Run:  .venv/bin/python bench/knn_network.py [--sizes 10000 100000 1000000]
          [--exact-limit 20000] [--variants 6x16 8x32] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_sql import GENERATE

from biomem.config import load_settings
from biomem.config.environment import LogLevel
from biomem.config.filecfg import LongTermSettings
from biomem.logging import configure_logging
from biomem.pipeline.long_term import LongTermStage
from biomem.pipeline.runner import run_stage
from biomem.pipeline.semantic_network import update_network
from biomem.store import DuckDBStore

MIB = 1024 * 1024

_SAMPLE = """
CREATE OR REPLACE TEMP TABLE bench_queries AS
SELECT uid FROM embeddings ORDER BY hash(uid) LIMIT $q
"""

# The exact top k of each sampled memory, by brute force (a top-k aggregate: at
# a million vectors the passing pairs would not fit in memory).
_TRUTH = """
CREATE OR REPLACE TEMP TABLE bench_truth AS
SELECT a, unnest(top).b AS b, unnest(top).s AS sim FROM (
    SELECT a, max_by({'b': b, 's': sim}, sim, $k) AS top FROM (
        SELECT x.uid AS a, y.uid AS b, list_cosine_similarity(x.vector, y.vector) AS sim
        FROM bench_queries q JOIN embeddings x ON x.uid = q.uid
        JOIN embeddings y ON y.source = x.source AND y.uid <> x.uid
    ) WHERE sim >= $min_cosine AND NOT isnan(sim)
    GROUP BY a
)
"""

# Recall of the edges, and how close the found neighbours come: the summed
# similarity of each sampled memory's edges over that of its true top k.
_RECALL = """
SELECT (SELECT count(*) FROM bench_truth),
       (SELECT count(*) FROM bench_truth t JOIN semantic_edges s ON s.a = t.a AND s.b = t.b),
       (SELECT count(*) FROM semantic_edges),
       (SELECT sum(similarity) FROM semantic_edges WHERE a IN (SELECT uid FROM bench_queries))
       / (SELECT sum(sim) FROM bench_truth)
"""


class RssSampler:
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def start(self) -> None:
        self._thread.start()

    def reset(self) -> int:
        rss = self._process.memory_info().rss
        self._peak = rss
        return rss

    def peak(self) -> int:
        return max(self._peak, self._process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


def _recall(store: DuckDBStore) -> dict[str, Any]:
    row = store.fetchone(_RECALL)
    assert row is not None
    truth, found = int(row[0]), int(row[1])
    return {
        "edges": int(row[2]),
        "truth": truth,
        "found": found,
        "recall": found / truth if truth else None,
        "similarity_ratio": float(row[3]) if row[3] is not None else None,
    }


def _rebuild(store: DuckDBStore, cfg: LongTermSettings, sampler: RssSampler) -> dict[str, Any]:
    """Mark every vector changed and build the network again under ``cfg``."""
    with store.transaction() as con:
        con.execute("UPDATE embeddings SET indexed = false")
        con.execute("DELETE FROM pipeline_state WHERE key LIKE 'knn_%'")
    start_rss = sampler.reset()
    started = time.perf_counter()
    with store.transaction() as con:
        report = update_network(con, cfg, _now(store))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "start_rss": start_rss / MIB,
        "peak_rss": sampler.peak() / MIB,
        "groups": report.groups,
        **_recall(store),
    }


def _now(store: DuckDBStore) -> Any:
    row = store.fetchone("SELECT max(created_at) + INTERVAL 1 MINUTE FROM memories")
    assert row is not None
    return row[0]


def child(n: int, args: argparse.Namespace) -> None:
    configure_logging(level=LogLevel.ERROR)
    sampler = RssSampler()
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="biomem-knn-") as tmp:
        config = Path(tmp) / "biomem.toml"
        config.write_text("[pipeline.long_term]\nexact_max = 0\n", encoding="utf-8")
        import os

        os.environ["BIOMEM_CONFIG_FILE"] = str(config)
        settings = load_settings()
        store = DuckDBStore.open(Path(tmp) / "bench.duckdb")
        try:
            with store.transaction() as con:
                con.execute(GENERATE, {"n": n})
            as_of = _now(store)
            start_rss = sampler.reset()
            started = time.perf_counter()
            outcome = run_stage(
                store, settings, LongTermStage(), as_of=as_of, ollama=None, stop=threading.Event()
            )
            _emit(
                {
                    "n": n,
                    "step": "long_term stage (lexical embeddings + LSH network)",
                    "seconds": time.perf_counter() - started,
                    "status": str(outcome.status),
                    "start_rss": start_rss / MIB,
                    "peak_rss": sampler.peak() / MIB,
                    "result": outcome.result.as_dict(),
                }
            )
            cfg = settings.pipeline.long_term
            store.execute(_SAMPLE, {"q": args.queries})
            started = time.perf_counter()
            store.execute(_TRUTH, {"min_cosine": cfg.min_cosine, "k": cfg.neighbours})
            truth_s = time.perf_counter() - started
            _emit(
                {
                    "n": n,
                    "step": "recall of the stage's network",
                    "truth_seconds": truth_s,
                    **_recall(store),
                }
            )
            for variant in args.variants:
                bands, window = (int(x) for x in variant.split("x"))
                lsh = cfg.model_copy(update={"lsh_bands": bands, "lsh_window": window})
                _emit({"n": n, "step": f"lsh {variant}", **_rebuild(store, lsh, sampler)})
            if n <= args.exact_limit:
                exact = cfg.model_copy(update={"exact_max": n})
                _emit({"n": n, "step": "exact", **_rebuild(store, exact, sampler)})
        finally:
            store.close()
    sampler.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--exact-limit", type=int, default=20_000)
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args)
        return
    for n in args.sizes:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(n)]
        command += ["--exact-limit", str(args.exact_limit), "--queries", str(args.queries)]
        if args.variants:
            command += ["--variants", *args.variants]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
