"""The semantic network: each memory's k nearest neighbours above a cosine threshold.

Only vectors of one *group* (the same source and length) are compared: a
lexical fallback vector and a model embedding live in different spaces. Each
group is indexed one of two ways, by its size:

* **exact** (at most ``exact_max`` vectors): every pair is compared, but only
  for the memories a change can affect — the changed ones, those whose
  neighbour changed, and those now similar enough to a changed one — so a run
  after a few new memories costs (new × group), not group².
* **approximate** (larger groups): random-hyperplane LSH with sorted windows.
  ``bands`` sets of ``bits`` random hyperplanes give each vector one code per
  band (the signs of its projections); vectors sorted by a band's code sit
  next to those sharing the longest code prefix, i.e. the smallest angle, and
  each vector is compared with the ``window`` vectors around it in every
  band's order. That is bands × window comparisons a vector, linear in the
  group's size however the vectors cluster (a bucket of identical vectors
  costs no more than any other), at the price of missing some true
  neighbours: bench/RESULTS.md measures the recall against the exact network.
  Any change to the group rebuilds its network whole (each vector's codes are
  kept, so only the changed ones are projected again); a rebuild is linear,
  and a rebuilt network depends on the data alone, never on the order of
  earlier runs.

Either way the result is a pure function of the stored vectors: the planes are
drawn once per store and kept, ties are broken by uid, and a crash inside the
one transaction leaves the previous network and the ``indexed = false`` marks
for the next run. NaN similarities (a zero vector, from a text without words)
never count: DuckDB orders NaN above every number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from biomem.config.filecfg import LongTermSettings
from biomem.pipeline.base import set_state

__all__ = ["NetworkReport", "update_network"]

_MODE_KEY = "knn_mode:{source}:{dim}"
_LAYOUT_KEY = "knn_lsh_layout"

_CHANGED = """
CREATE OR REPLACE TEMP TABLE knn_changed AS
SELECT uid, source, len(vector) AS dim FROM embeddings WHERE NOT indexed
"""

# A group needs work when one of its vectors changed, or when one of its
# members points at a vector that changed (it may have left for another group).
_GROUPS = """
SELECT source, len(vector) AS dim, count(*) AS n,
       count(*) FILTER (WHERE NOT indexed) AS changed,
       bool_or(uid IN (SELECT s.a FROM semantic_edges s
                       WHERE s.b IN (SELECT uid FROM knn_changed))) AS lost
FROM embeddings GROUP BY ALL ORDER BY ALL
"""

_IN_GROUP = "source = $source AND len(vector) = $dim"

# Dense ids in uid order: the tie-break (the smaller uid first) and a cheap join key.
_IDS = f"""
CREATE OR REPLACE TEMP TABLE knn_ids AS
SELECT uid, CAST(row_number() OVER (ORDER BY uid) AS INTEGER) AS id
FROM embeddings WHERE {_IN_GROUP}
"""

_SIMILARITY = "list_cosine_similarity(x.vector, y.vector)"
_PASSES = "sim >= $min_cosine AND NOT isnan(sim)"

# The group's vectors by id, for the exact mode (at most exact_max of them). A
# cross product of two small tables streams; a hash join on the group's
# (source, length), one key for every row, let the planner materialize the
# pairs with their vectors (18 GB at 10,000 vectors).
_EXACT_VECTORS = """
CREATE OR REPLACE TEMP TABLE knn_vec AS
SELECT i.id, i.uid, e.vector FROM knn_ids i JOIN embeddings e USING (uid)
"""

_EXACT_AFFECTED = f"""
CREATE OR REPLACE TEMP TABLE knn_affected AS
SELECT uid FROM knn_changed WHERE source = $source AND dim = $dim
UNION
SELECT s.a FROM semantic_edges s JOIN knn_ids i ON i.uid = s.a
WHERE s.b IN (SELECT uid FROM knn_changed)
UNION
SELECT uid FROM (
    SELECT y.uid, {_SIMILARITY} AS sim
    FROM (SELECT * FROM knn_vec WHERE uid IN (SELECT uid FROM knn_changed)) x
    CROSS JOIN knn_vec y
    WHERE y.id <> x.id
) WHERE {_PASSES}
"""

_EXACT_ALL = "CREATE OR REPLACE TEMP TABLE knn_affected AS SELECT uid FROM knn_ids"

# The top k by (similarity desc, uid asc), without keeping the pairs: the
# aggregate holds k candidates a memory, whatever the number of pairs.
_TOP = "max_by({'b': b, 's': sim}, {'s': sim, 'n': -b}, $k)"

_EXACT_TOP = f"""
CREATE OR REPLACE TEMP TABLE knn_top AS
SELECT a, {_TOP} AS top FROM (
    SELECT x.id AS a, y.id AS b, {_SIMILARITY} AS sim
    FROM (SELECT * FROM knn_vec WHERE uid IN (SELECT uid FROM knn_affected)) x
    CROSS JOIN knn_vec y
    WHERE y.id <> x.id
) WHERE {_PASSES}
GROUP BY a
"""

_NEW_EDGES = """
CREATE OR REPLACE TEMP TABLE knn_new AS
SELECT xa.uid AS a, xb.uid AS b, CAST(t.s AS DOUBLE) AS similarity, CAST(t.rank AS INTEGER) AS rank
FROM (SELECT a, unnest(top) AS e, generate_subscripts(top, 1) AS rank FROM knn_top) q,
     LATERAL (SELECT q.e.b AS b, q.e.s AS s, q.rank AS rank) t
JOIN knn_ids xa ON xa.id = q.a JOIN knn_ids xb ON xb.id = t.b
"""

_EXACT_WRITE = (
    "DELETE FROM semantic_edges WHERE a IN (SELECT uid FROM knn_affected)",
    "INSERT INTO semantic_edges SELECT a, b, similarity, rank FROM knn_new",
)

# A rebuilt group rewrites only the edges that differ: at a million vectors
# most of its ten million edges are the same as before.
_REBUILD_WRITE = (
    """
    DELETE FROM semantic_edges s
    WHERE s.a IN (SELECT uid FROM knn_ids)
      AND NOT EXISTS (SELECT 1 FROM knn_new n WHERE n.a = s.a AND n.b = s.b
                      AND n.rank = s.rank AND n.similarity = s.similarity)
    """,
    """
    INSERT INTO semantic_edges SELECT a, b, similarity, rank FROM knn_new n
    WHERE NOT EXISTS (SELECT 1 FROM semantic_edges s WHERE s.a = n.a AND s.b = n.b)
    """,
)

# ±1 in each dimension, from a hash: drawn once per store and length, then kept
# (the hash may differ between DuckDB versions; the stored planes do not). The
# hash of one string, not of several arguments: DuckDB's combination of
# several hashes leaves their low bits correlated (planes came out equal).
_PLANES = """
INSERT INTO lsh_planes
SELECT $dim, band, bit,
       list_transform(range($dim), lambda d:
           CASE WHEN (hash(concat_ws(':', 'lsh', $dim, band, bit, d)) >> 40) & 1 = 0
                THEN 1.0 ELSE -1.0 END::FLOAT)
FROM range($bands) b(band), range($bits) t(bit)
WHERE NOT EXISTS (SELECT 1 FROM lsh_planes p WHERE p.dim = $dim AND p.band = band AND p.bit = bit)
"""

_STALE_CODES = """
DELETE FROM embedding_codes WHERE uid IN (SELECT uid FROM knn_changed)
"""

# All of a vector's projections in one expression (a join with the planes
# would copy the vector once per plane).
_CODES = f"""
INSERT INTO embedding_codes
SELECT uid, list_transform(range($bands), lambda band:
           list_sum(list_transform(range($bits), lambda bit:
               CASE WHEN signs[band * $bits + bit + 1] THEN 1 << bit ELSE 0 END))::INTEGER)
FROM (
    SELECT e.uid, list_transform(p.planes, lambda q: list_dot_product(e.vector, q) > 0) AS signs
    FROM embeddings e,
         (SELECT list(normal ORDER BY band, bit) AS planes FROM lsh_planes WHERE dim = $dim) p
    WHERE e.{_IN_GROUP.replace("len(vector)", "len(e.vector)")}
      AND e.uid NOT IN (SELECT uid FROM embedding_codes)
)
"""


def _band_pairs(band: int, half_window: int) -> str:
    """Pairs (a, b, sim) of vectors at most ``half_window`` apart in ``band``'s code order."""
    leads = ", ".join(f"lead(id, {j}) OVER w" for j in range(1, half_window + 1))
    sims = ", ".join(
        f"list_cosine_similarity(vector, lead(vector, {j}) OVER w)"
        for j in range(1, half_window + 1)
    )
    return f"""
    INSERT INTO knn_pairs
    SELECT least(a, b), greatest(a, b), sim FROM (
        SELECT id AS a, unnest(leads) AS b, unnest(sims) AS sim FROM (
            SELECT i.id, [{leads}] AS leads, [{sims}] AS sims
            FROM knn_ids i JOIN embeddings e ON e.uid = i.uid
            JOIN embedding_codes c ON c.uid = i.uid
            WINDOW w AS (ORDER BY c.codes[{band + 1}], i.id)
        )
    ) WHERE b IS NOT NULL AND {_PASSES}
    """


# After each band, its pairs (both ways) are merged with the best k a vector has so
# far: the top k of a union is the top k of (the top k of one part ∪ the other), so
# the result equals one top k over every band's pairs, while the table holds at
# most k + window pairs a vector instead of bands × window (at a million vectors
# the pairs of all 8 bands at once, doubled for both directions, ran DuckDB out
# of its memory limit).
_LSH_MERGE = f"""
CREATE OR REPLACE TEMP TABLE knn_merged AS
SELECT a, t.b AS b, t.s AS sim FROM (
    SELECT a, unnest({_TOP}) AS t FROM (
        SELECT DISTINCT a, b, sim FROM (
            SELECT a, b, sim FROM knn_pairs
            UNION ALL SELECT b AS a, a AS b, sim FROM knn_pairs
            UNION ALL SELECT a, b, sim FROM knn_best
        )
    ) GROUP BY a
)
"""

_LSH_TOP = f"""
CREATE OR REPLACE TEMP TABLE knn_top AS
SELECT a, {_TOP} AS top FROM knn_best GROUP BY a
"""

_TEMPS = (
    "knn_changed",
    "knn_ids",
    "knn_vec",
    "knn_affected",
    "knn_top",
    "knn_new",
    "knn_pairs",
    "knn_best",
    "knn_merged",
)


@dataclass(slots=True)
class NetworkReport:
    """What one update of the network did."""

    affected: int = 0  # memories whose neighbours were computed
    groups: dict[str, str] | None = None  # "source/dim" -> "exact" | "lsh" (groups worked on)

    def as_detail(self) -> dict[str, Any]:
        return {"affected": self.affected, "knn": dict(self.groups or {})}


def update_network(con: Any, cfg: LongTermSettings, now: datetime) -> NetworkReport:
    """Bring the semantic network up to date, inside the caller's transaction.

    Args:
        con: a DuckDB connection in an open transaction.
        cfg: the long-term settings (neighbours, min_cosine, exact_max, lsh_*).
        now: the run's clock, for the kept state.
    """
    report = NetworkReport(groups={})
    con.execute(_CHANGED)
    layout = f"{cfg.lsh_bands}x{cfg.lsh_bits}"
    if _state(con, _LAYOUT_KEY) != layout:
        # Other planes make other codes: draw them again, project every vector again.
        con.execute("DELETE FROM lsh_planes")
        con.execute("DELETE FROM embedding_codes")
        set_state(con, _LAYOUT_KEY, layout, now)
    groups = con.execute(_GROUPS).fetchall()
    # Codes of changed vectors are stale wherever the vector went.
    con.execute(_STALE_CODES)
    for source, dim, size, changed, lost in groups:
        mode = "exact" if size <= cfg.exact_max else "lsh"
        key = _MODE_KEY.format(source=source, dim=dim)
        switched = _state(con, key) != mode
        if not (changed or lost or switched):
            continue
        params = {"source": source, "dim": dim}
        con.execute(_IDS, params)
        if mode == "exact":
            report.affected += _exact(con, cfg, params, rebuild=switched)
        else:
            report.affected += _lsh(con, cfg, params)
        set_state(con, key, mode, now)
        assert report.groups is not None
        report.groups[f"{source}/{dim}"] = mode
    con.execute("UPDATE embeddings SET indexed = true WHERE NOT indexed")
    for table in _TEMPS:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return report


def _exact(con: Any, cfg: LongTermSettings, params: dict[str, Any], *, rebuild: bool) -> int:
    con.execute(_EXACT_VECTORS)
    if rebuild:
        # The edges were the approximate ones (or none): recompute them all.
        con.execute(_EXACT_ALL)
    else:
        con.execute(_EXACT_AFFECTED, {**params, "min_cosine": cfg.min_cosine})
    con.execute(_EXACT_TOP, {"min_cosine": cfg.min_cosine, "k": cfg.neighbours})
    con.execute(_NEW_EDGES)
    for statement in _EXACT_WRITE:
        con.execute(statement)
    row = con.execute("SELECT count(*) FROM knn_affected").fetchone()
    return int(row[0]) if row else 0


def _lsh(con: Any, cfg: LongTermSettings, params: dict[str, Any]) -> int:
    layout = {"bands": cfg.lsh_bands, "bits": cfg.lsh_bits}
    con.execute(_PLANES, {"dim": params["dim"], **layout})
    con.execute(_CODES, {**params, **layout})
    con.execute("CREATE OR REPLACE TEMP TABLE knn_best (a INTEGER, b INTEGER, sim FLOAT)")
    for band in range(cfg.lsh_bands):
        con.execute("CREATE OR REPLACE TEMP TABLE knn_pairs (a INTEGER, b INTEGER, sim FLOAT)")
        con.execute(_band_pairs(band, cfg.lsh_window // 2), {"min_cosine": cfg.min_cosine})
        con.execute(_LSH_MERGE, {"k": cfg.neighbours})
        con.execute("DROP TABLE knn_best")
        con.execute("ALTER TABLE knn_merged RENAME TO knn_best")
    con.execute(_LSH_TOP, {"k": cfg.neighbours})
    con.execute(_NEW_EDGES)
    for statement in _REBUILD_WRITE:
        con.execute(statement)
    row = con.execute("SELECT count(*) FROM knn_ids").fetchone()
    return int(row[0]) if row else 0


def _state(con: Any, key: str) -> Any:
    row = con.execute("SELECT value FROM pipeline_state WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])
