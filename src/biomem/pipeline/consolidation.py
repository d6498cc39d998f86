"""Consolidation: Hebbian association weights, replay strength, and each memory's fate.

Pairs of memories co-activated in an episode strengthen their association by
the Hebbian rule w ← w + η(a_i·a_j − w), applied once per shared context:
the episode itself, and each topic and entity the two share. From w = 0,
k applications give the closed form w = a_i·a_j·(1 − (1 − η)^k), with the
activation a of a memory its importance. Weights then decay with the hours
since the pair's last co-activation, w·max(0, 1 − decay·hours), and weights
below the floor are pruned. The closed form makes the stage idempotent: the
same memories and the same run time give the same weights, however often or
however interrupted it runs.

Replay strength r = 0.5·importance + 0.5·tanh(4·Σw) over a memory's
associations. Fate by thresholds: r ≥ transfer → cortical_transfer,
r ≥ replay → hippocampal_retention, r ≥ replay/2 → gradual_forgetting,
else rapid_forgetting. Strength = r, lowered by forgetting with age
(gradual: e^(−days/30), rapid: e^(−days/7)), raised to the homeostasis
exponent γ (1 until homeostasis sets it).
Source memories are never touched.
"""

from __future__ import annotations

from biomem.pipeline.base import StageContext, StageResult, get_state

__all__ = ["HOMEOSTASIS_SCALE", "STRENGTH_SQL", "ConsolidationStage"]

HOMEOSTASIS_SCALE = "homeostasis_scale"

_MEMBERS = """
    SELECT em.uid, em.episode_id, m.created_at, s.importance AS act, e.topics, e.entities
    FROM episode_members em
    JOIN memories m USING (uid)
    JOIN memory_state s USING (uid)
    JOIN enrichments e USING (uid)
    WHERE m.created_at <= $as_of
"""

# The kept associations straight from the pair join: most pairs decay below the
# floor, and materializing all of them first cost 2.5 GB at a million memories.
_ASSOCIATIONS = f"""
INSERT INTO associations
WITH mem AS ({_MEMBERS}), pairs AS (
    SELECT x.uid AS a, y.uid AS b, x.episode_id,
           1 + len(list_distinct(list_intersect(x.topics, y.topics)))
             + len(list_distinct(list_intersect(x.entities, y.entities))) AS k,
           x.act * y.act AS target,
           greatest(x.created_at, y.created_at) AS last_at
    FROM mem x JOIN mem y ON x.episode_id = y.episode_id AND x.uid < y.uid
), weighted AS (
    SELECT a, b, episode_id, CAST(k AS INTEGER) AS k, last_at,
           target * (1 - pow(1 - $eta, k)) AS base_weight
    FROM pairs
), decayed AS (
    SELECT a, b, episode_id, k, base_weight,
           base_weight * greatest(0, 1 - $decay * epoch_us($as_of - last_at) / 3600e6) AS weight,
           last_at
    FROM weighted
)
SELECT a, b, episode_id, k, base_weight, weight, last_at FROM decayed WHERE weight >= $floor
"""

# Every pair co-activated in an episode, counted without forming them: n(n-1)/2 an episode.
_PAIR_COUNT = f"""
WITH mem AS ({_MEMBERS})
SELECT COALESCE(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM mem GROUP BY episode_id)
"""

# Shared with homeostasis: strength from base strength and the current exponent.
# A power keeps strengths in [0, 1] and their order, where a factor would clip.
STRENGTH_SQL = "pow(least(1.0, greatest(0.0, base_strength)), $scale)"

_STRENGTHS = f"""
UPDATE memory_state SET
    replay_strength = r.replay,
    fate = r.fate,
    base_strength = r.base,
    strength = {STRENGTH_SQL.replace("base_strength", "r.base")},
    updated_at = $as_of
FROM (
    SELECT uid, replay, fate,
           replay * CASE fate
               WHEN 'gradual_forgetting' THEN exp(-age_days / 30)
               WHEN 'rapid_forgetting' THEN exp(-age_days / 7)
               ELSE 1 END AS base
    FROM (
        SELECT uid, replay, age_days, CASE
            WHEN replay >= $transfer THEN 'cortical_transfer'
            WHEN replay >= $retain THEN 'hippocampal_retention'
            WHEN replay >= $retain / 2 THEN 'gradual_forgetting'
            ELSE 'rapid_forgetting' END AS fate
        FROM (
            SELECT s.uid,
                   0.5 * s.importance + 0.5 * tanh(4 * COALESCE(w.total, 0)) AS replay,
                   greatest(0, epoch_us($as_of - m.created_at) / 86400e6) AS age_days
            FROM memory_state s
            JOIN memories m USING (uid)
            LEFT JOIN (
                SELECT uid, sum(weight) AS total FROM (
                    SELECT a AS uid, weight FROM associations
                    UNION ALL SELECT b AS uid, weight FROM associations
                ) GROUP BY uid
            ) w USING (uid)
        )
    )
) r
WHERE memory_state.uid = r.uid
"""


class ConsolidationStage:
    """Associations, replay and fate (reads short-term episodes)."""

    name = "consolidation"
    after: tuple[str, ...] = ("short_term",)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.settings.pipeline.consolidation
        scale = float(get_state(ctx.store, HOMEOSTASIS_SCALE, 1.0))
        # Recomputed whole in one transaction: a crash leaves the previous state.
        with ctx.store.transaction() as con:
            pairs_row = con.execute(_PAIR_COUNT, {"as_of": ctx.as_of}).fetchone()
            con.execute("DELETE FROM associations")
            con.execute(
                _ASSOCIATIONS,
                {
                    "as_of": ctx.as_of,
                    "eta": cfg.learning_rate,
                    "decay": cfg.decay_per_hour,
                    "floor": cfg.prune_below,
                },
            )
            kept_row = con.execute("SELECT count(*) FROM associations").fetchone()
            con.execute(
                _STRENGTHS,
                {
                    "as_of": ctx.as_of,
                    "scale": scale,
                    "transfer": cfg.transfer_threshold,
                    "retain": cfg.replay_threshold,
                },
            )
            fates = con.execute(
                "SELECT fate, count(*) FROM memory_state GROUP BY fate ORDER BY fate"
            ).fetchall()
        pairs = int(pairs_row[0]) if pairs_row else 0
        kept = int(kept_row[0]) if kept_row else 0
        pruned = pairs - kept
        return StageResult(
            items=kept,
            detail={"pruned": pruned, "fates": {str(f): int(n) for f, n in fates}},
        )
