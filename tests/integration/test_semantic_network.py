"""The semantic network on a real DuckDB file: exact top k, its increments, and the LSH mode."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from biomem.config.filecfg import LongTermSettings
from biomem.pipeline.semantic_network import update_network
from biomem.store import DuckDBStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
DIM = 16


def put(store: DuckDBStore, vectors: dict[str, list[float]], *, source: str = "llm") -> None:
    """Store ``vectors`` as changed embeddings (indexed = false), as the stage does."""
    with store.transaction() as con:
        for uid, vector in vectors.items():
            con.execute(
                "INSERT INTO embeddings VALUES (?, 1, ?, NULL, ?, false, ?) ON CONFLICT (uid)"
                " DO UPDATE SET source = excluded.source, vector = excluded.vector,"
                " indexed = false",
                [uid, source, vector, NOW],
            )


def build(store: DuckDBStore, **knobs: Any) -> dict[str, Any]:
    cfg = LongTermSettings(**{"neighbours": 3, "min_cosine": 0.5, **knobs})
    with store.transaction() as con:
        return update_network(con, cfg, NOW).as_detail()


def edges(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return store.execute("SELECT a, b, similarity, rank FROM semantic_edges ORDER BY a, rank")


def cosine(x: list[float], y: list[float]) -> float:
    dot = sum(a * b for a, b in zip(x, y, strict=True))
    return dot / (math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in y)))


def brute_force(
    vectors: dict[str, list[float]], *, k: int, min_cosine: float
) -> dict[str, list[str]]:
    """Each uid's top k by (similarity desc, uid asc) above min_cosine, computed in Python."""
    top: dict[str, list[str]] = {}
    for a, x in vectors.items():
        if not any(x):
            continue
        scored = [(cosine(x, y), b) for b, y in vectors.items() if b != a and any(y)]
        passing = [(s, b) for s, b in scored if s >= min_cosine]
        passing.sort(key=lambda sb: (-round(sb[0], 6), sb[1]))
        if passing:
            top[a] = [b for _, b in passing[:k]]
    return top


def as_lists(rows: list[tuple[Any, ...]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a, b, _similarity, _rank in rows:
        out.setdefault(a, []).append(b)
    return out


def clustered(
    n_clusters: int, size: int, *, seed: int, spread: float = 0.05
) -> dict[str, list[float]]:
    """``n_clusters`` tight clusters of ``size`` vectors around random centres."""
    rng = random.Random(seed)
    vectors: dict[str, list[float]] = {}
    for c in range(n_clusters):
        centre = [rng.gauss(0, 1) for _ in range(DIM)]
        for i in range(size):
            vectors[f"c{c:03d}-{i}"] = [x + rng.gauss(0, spread) for x in centre]
    return vectors


def test_exact_network_is_the_brute_force_top_k(store: DuckDBStore) -> None:
    """Each memory's edges are its k most similar others above min_cosine, ties by uid,
    ranked 1..k with their similarity; a zero vector (NaN cosine) gets and gives none."""
    vectors = {
        "a": [1.0, 0.0, 0.0, 0.0],
        "b": [0.9, 0.1, 0.0, 0.0],
        "c": [0.9, 0.1, 0.0, 0.0],  # ties with b: b first
        "d": [0.7, 0.7, 0.0, 0.0],
        "e": [0.0, 0.0, 1.0, 0.0],  # alone: nothing above 0.5
        "z": [0.0, 0.0, 0.0, 0.0],  # no words: no similarity at all
    }
    put(store, vectors)
    detail = build(store)
    assert detail["knn"] == {"llm/4": "exact"}
    rows = edges(store)
    assert as_lists(rows) == brute_force(vectors, k=3, min_cosine=0.5)
    assert as_lists(rows)["a"] == ["b", "c", "d"]
    by_pair = {(a, b): (s, r) for a, b, s, r in rows}
    assert by_pair[("a", "d")][0] == pytest.approx(cosine(vectors["a"], vectors["d"]), abs=1e-6)
    assert [r for a, _, _, r in rows if a == "a"] == [1, 2, 3]
    assert all("z" not in (a, b) and "e" not in (a, b) for a, b, _, _ in rows)
    assert store.execute("SELECT count(*) FROM embeddings WHERE NOT indexed") == [(0,)]


def test_exact_increments_equal_one_build(store: DuckDBStore, tmp_path: Any) -> None:
    """Adding vectors in three runs, one of them changing an old vector, leaves the same
    edges as building all of them at once."""
    vectors = clustered(6, 5, seed=1, spread=0.4)
    names = sorted(vectors)
    put(store, {n: vectors[n] for n in names[:12]})
    build(store)
    put(store, {n: vectors[n] for n in names[12:20]})
    build(store)
    moved = dict(vectors, **{names[3]: vectors[names[25]]})
    put(store, {n: moved[n] for n in [*names[20:], names[3]]})
    build(store)

    fresh = DuckDBStore.open(tmp_path / "fresh.duckdb")
    try:
        put(fresh, moved)
        build(fresh)
        assert edges(store) == edges(fresh)
    finally:
        fresh.close()
    assert as_lists(edges(store)) == brute_force(moved, k=3, min_cosine=0.5)


def test_groups_never_mix_and_a_vector_leaving_is_dropped(store: DuckDBStore) -> None:
    """Fallback and LLM vectors are compared only within their group; a memory re-embedded
    by the LLM disappears from its old fallback peers' lists."""
    same = [1.0, 0.0, 0.0, 0.0]
    put(store, {"f1": same, "f2": same, "f3": [0.9, 0.2, 0.0, 0.0]}, source="fallback")
    put(store, {"l1": same}, source="llm")
    build(store)
    assert as_lists(edges(store)) == {"f1": ["f2", "f3"], "f2": ["f1", "f3"], "f3": ["f1", "f2"]}
    put(store, {"f2": same}, source="llm")  # f2 re-embedded by the LLM
    detail = build(store)
    assert set(detail["knn"]) == {"fallback/4", "llm/4"}
    assert as_lists(edges(store)) == {
        "f1": ["f3"],
        "f3": ["f1"],
        "f2": ["l1"],
        "l1": ["f2"],
    }


def test_lsh_finds_tight_clusters_and_scales_to_the_window(store: DuckDBStore) -> None:
    """Above exact_max the network is approximate; on well separated clusters it still finds
    every true neighbour, and it never compares more than bands x window pairs a vector."""
    vectors = clustered(40, 4, seed=7)
    put(store, vectors)
    detail = build(store, exact_max=10, lsh_bands=6, lsh_bits=12, lsh_window=8)
    assert detail["knn"] == {f"llm/{DIM}": "lsh"}
    truth = brute_force(vectors, k=3, min_cosine=0.5)
    found = as_lists(edges(store))
    hits = sum(len(set(found.get(a, [])) & set(b)) for a, b in truth.items())
    assert hits / sum(len(b) for b in truth.values()) >= 0.95
    # What it finds is true: every edge's similarity is the real cosine, above the floor.
    for a, b, similarity, _ in edges(store):
        assert similarity == pytest.approx(cosine(vectors[a], vectors[b]), abs=1e-5)
        assert similarity >= 0.5


def test_lsh_network_depends_on_the_data_not_the_runs(store: DuckDBStore, tmp_path: Any) -> None:
    """In LSH mode, vectors added over several runs end with exactly the rows of one run over
    all of them (a kill-and-rerun must equal an uninterrupted run)."""
    vectors = clustered(30, 5, seed=3, spread=0.3)
    names = sorted(vectors)
    knobs = {"exact_max": 20, "lsh_bands": 4, "lsh_bits": 10, "lsh_window": 6}
    for start in range(0, len(names), 50):
        put(store, {n: vectors[n] for n in names[start : start + 50]})
        build(store, **knobs)
    fresh = DuckDBStore.open(tmp_path / "fresh.duckdb")
    try:
        put(fresh, vectors)
        build(fresh, **knobs)
        assert edges(store) == edges(fresh)
        assert store.execute("SELECT * FROM embedding_codes ORDER BY uid") == fresh.execute(
            "SELECT * FROM embedding_codes ORDER BY uid"
        )
    finally:
        fresh.close()


def test_lsh_band_by_band_merge_equals_one_top_k_over_every_band(store: DuckDBStore) -> None:
    """The network keeps only the best k a vector has after each band; the result is the
    same as one top k over the candidate pairs of every band at once (the reference below,
    written with the module's own band query)."""
    from biomem.pipeline.semantic_network import _band_pairs

    vectors = clustered(25, 8, seed=11, spread=0.6)  # loose: bands disagree, ties happen
    put(store, vectors)
    knobs = {"exact_max": 10, "lsh_bands": 5, "lsh_bits": 10, "lsh_window": 8}
    build(store, **knobs)
    got = edges(store)
    with store.transaction() as con:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE knn_ids AS SELECT uid,"
            " CAST(row_number() OVER (ORDER BY uid) AS INTEGER) AS id FROM embeddings"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE knn_pairs (a INTEGER, b INTEGER, sim FLOAT)")
        for band in range(5):
            con.execute(_band_pairs(band, 4), {"min_cosine": 0.5})
        reference = con.execute(
            """
            WITH p AS (SELECT DISTINCT a, b, sim FROM knn_pairs),
            d AS (SELECT a, b, sim FROM p UNION ALL SELECT b, a, sim FROM p),
            r AS (SELECT a, b, sim, row_number() OVER (PARTITION BY a ORDER BY sim DESC, b)
                  AS rank FROM d)
            SELECT x.uid, y.uid, CAST(r.sim AS DOUBLE), CAST(r.rank AS INTEGER)
            FROM r JOIN knn_ids x ON x.id = r.a JOIN knn_ids y ON y.id = r.b
            WHERE r.rank <= 3 ORDER BY x.uid, r.rank
            """
        ).fetchall()
        con.execute("DROP TABLE knn_pairs")
        con.execute("DROP TABLE knn_ids")
    assert len(reference) > 100
    assert got == reference


def test_crossing_exact_max_switches_modes_and_rebuilds(store: DuckDBStore) -> None:
    """A group that grows past exact_max is rebuilt by LSH; shrinking back below it rebuilds
    the exact network, so no approximate edge outlives the switch."""
    vectors = clustered(5, 4, seed=11, spread=0.3)
    names = sorted(vectors)
    put(store, {n: vectors[n] for n in names[:8]})
    assert build(store, exact_max=10)["knn"] == {f"llm/{DIM}": "exact"}
    put(store, {n: vectors[n] for n in names[8:]})
    assert build(store, exact_max=10)["knn"] == {f"llm/{DIM}": "lsh"}
    assert store.execute("SELECT count(*) FROM embedding_codes") == [(20,)]
    # The same vectors, now under a larger exact_max: exact again, and exactly the brute force.
    assert build(store, exact_max=100)["knn"] == {f"llm/{DIM}": "exact"}
    assert as_lists(edges(store)) == brute_force(vectors, k=3, min_cosine=0.5)
    # Nothing changed and no switch: nothing to do.
    assert build(store, exact_max=100)["knn"] == {}


def test_changing_the_lsh_layout_draws_new_planes(store: DuckDBStore) -> None:
    """Other bands or bits make other codes: the planes are drawn again and every vector is
    projected again, never mixing codes of two layouts."""
    vectors = clustered(10, 3, seed=5)
    put(store, vectors)
    build(store, exact_max=0, lsh_bands=2, lsh_bits=8)
    assert store.execute("SELECT count(*) FROM lsh_planes") == [(16,)]
    put(store, {"c000-0": vectors["c000-0"]})
    build(store, exact_max=0, lsh_bands=3, lsh_bits=4)
    assert store.execute("SELECT count(*) FROM lsh_planes") == [(12,)]
    assert store.execute("SELECT DISTINCT len(codes) FROM embedding_codes") == [(3,)]
    assert store.execute("SELECT max(list_max(codes)) < 16 FROM embedding_codes") == [(True,)]
