"""Homeostasis: when the mean strength leaves its band, rescale toward the target.

Strength = base^γ, with the base strengths that consolidation computes and γ
kept in ``pipeline_state``. A power keeps every strength in [0, 1] and keeps
their order (a factor would clip the strong ones at 1 and erase their
differences). When the mean leaves the band, γ is solved by bisection so the
mean becomes the target; a second run, finding it inside the band, changes
nothing.
"""

from __future__ import annotations

import math

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
        if cfg.band_low <= mean <= cfg.band_high or not 0 < mean_base < 1:
            return StageResult(detail={"rescaled": False, "mean": mean, "scale": old_scale})
        scale = self._solve(ctx, cfg.target_mean)
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

    @staticmethod
    def _solve(ctx: StageContext, target: float) -> float:
        """γ with mean(base^γ) = target; the mean falls as γ grows, so bisect on log γ."""
        low, high = -6.0, 6.0  # γ from e^-6 to e^6
        for _ in range(40):
            mid = (low + high) / 2
            row = ctx.store.fetchone(
                f"SELECT avg({STRENGTH_SQL}) FROM memory_state", {"scale": math.exp(mid)}
            )
            mean = float(row[0]) if row and row[0] is not None else target
            if mean > target:
                low = mid
            else:
                high = mid
        return math.exp((low + high) / 2)
