"""Homeostasis: when the mean strength leaves its band, rescale toward the target.

The scale is kept in ``pipeline_state`` and applies to the base strengths
that consolidation computes: strength = clamp(base × scale). A new scale is
target ÷ mean(base), so one run brings the mean back to the target (up to
clamping) and a second run, finding it inside the band, changes nothing.
"""

from __future__ import annotations

from biomem.pipeline.base import StageContext, StageResult, get_state, set_state
from biomem.pipeline.consolidation import HOMEOSTASIS_SCALE, STRENGTH_SQL

__all__ = ["HomeostasisStage"]


class HomeostasisStage:
    """Rescale strengths (reads consolidation)."""

    name = "homeostasis"
    after: tuple[str, ...] = ("consolidation",)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.settings.pipeline.homeostasis
        row = ctx.store.fetchone(
            "SELECT avg(strength), avg(base_strength), count(*) FROM memory_state"
        )
        if row is None or not row[2] or row[0] is None:
            return StageResult(detail={"rescaled": False})
        mean, mean_base, count = float(row[0]), float(row[1]), int(row[2])
        old_scale = float(get_state(ctx.store, HOMEOSTASIS_SCALE, 1.0))
        if cfg.band_low <= mean <= cfg.band_high or mean_base <= 0:
            return StageResult(detail={"rescaled": False, "mean": mean, "scale": old_scale})
        scale = cfg.target_mean / mean_base
        with ctx.store.transaction() as con:
            set_state(con, HOMEOSTASIS_SCALE, scale, ctx.as_of)
            con.execute(f"UPDATE memory_state SET strength = {STRENGTH_SQL}", {"scale": scale})
            after = con.execute("SELECT avg(strength) FROM memory_state").fetchone()
        return StageResult(
            items=count,
            detail={
                "rescaled": True,
                "mean_before": mean,
                "mean_after": float(after[0]) if after else None,
                "scale": scale,
            },
        )
