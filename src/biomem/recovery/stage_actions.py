"""Actions on the stages' runs and schedules (the daemon's orchestrator).

* ``cancel_stuck_stage`` — the stuck run is asked to stop at its next batch
  boundary (its LLM calls in flight are cancelled; nothing half-written
  commits). If it has not ended after the grace period, the statement it
  waits on in the store is interrupted; then the stage's job is rescheduled
  to run again after ``reschedule_delay_seconds``.
* ``pause_stages`` / ``resume_stages`` — the rule's stages (all when it
  names none) stop being scheduled, or are scheduled again; a run in
  progress finishes.

All three need the daemon's schedules: in a one-off command they are
unavailable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from biomem.config.recovery import STAGE_NAMES
from biomem.recovery.actions import (
    Action,
    ActionContext,
    ActionPlan,
    ActionResult,
    ActionUnavailable,
)

if TYPE_CHECKING:
    from biomem.orchestrator import Orchestrator

__all__ = ["STAGE_ACTIONS"]


def _orchestrator(ctx: ActionContext) -> Orchestrator:
    orchestrator = ctx.orchestrator
    if orchestrator is None or not orchestrator.running:
        raise ActionUnavailable("no schedules run in this process (only in `biomem run`)")
    return orchestrator


class CancelStuckStage:
    name = "cancel_stuck_stage"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        orchestrator = _orchestrator(ctx)
        runs = [
            r
            for r in orchestrator.active_runs()
            if not ctx.rule.stages or r.stage in ctx.rule.stages
        ]
        chosen = next((r for r in runs if r.pass_id == ctx.trigger.pass_id), None)
        if chosen is None and runs:  # a manual run: the longest-running one
            chosen = max(runs, key=lambda r: r.running_s)
        if chosen is None:
            raise ActionUnavailable("no stage run in progress")
        return ActionPlan(
            self.name,
            f"stage {chosen.stage} (run of job {chosen.job})",
            {
                "pass_id": chosen.pass_id,
                "stage": chosen.stage,
                "running_s": round(chosen.running_s, 1),
                "grace_s": ctx.settings.stage_cancel_grace_seconds,
                "reschedule_in_s": ctx.settings.reschedule_delay_seconds,
            },
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        orchestrator = _orchestrator(ctx)
        pass_id = int(plan.arguments["pass_id"])
        stage = str(plan.arguments["stage"])
        grace_s = float(plan.arguments["grace_s"])
        if orchestrator.cancel_run(pass_id) is None:
            return ActionResult(True, f"stage {stage}'s run had already ended", {"ended": True})
        ended = orchestrator.wait_run_ended(pass_id, grace_s)
        interrupted = False
        if not ended:
            # Not at a batch boundary within the grace: a statement holds it.
            ctx.app.store.interrupt()
            interrupted = True
            ended = orchestrator.wait_run_ended(pass_id, grace_s)
        when = orchestrator.reschedule(stage, float(plan.arguments["reschedule_in_s"]))
        detail = {
            "ended": ended,
            "store_interrupted": interrupted,
            "rescheduled_at": None if when is None else when.isoformat(),
        }
        if not ended:
            return ActionResult(
                False, f"stage {stage} did not stop within {2 * grace_s:g} s", detail
            )
        again = f"runs again at {when:%H:%M:%S} UTC" if when else "runs again on its schedule"
        how = " after interrupting its store statement" if interrupted else ""
        return ActionResult(True, f"stage {stage} cancelled{how}; {again}", detail)


def _stages(ctx: ActionContext) -> list[str]:
    return list(ctx.rule.stages) or list(STAGE_NAMES)


class PauseStages:
    name = "pause_stages"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        _orchestrator(ctx)
        return ActionPlan(self.name, "stage schedules", {"stages": _stages(ctx)})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        orchestrator = _orchestrator(ctx)
        stages = [str(s) for s in plan.arguments["stages"]]
        paused = [s for s in stages if orchestrator.pause_stage(s)]
        scheduled = orchestrator.scheduled_stages()
        already = [s for s in stages if s not in paused and scheduled.get(s)]
        return ActionResult(
            True,
            f"paused {', '.join(paused) or 'none'}"
            + (f"; already paused {', '.join(already)}" if already else ""),
            {"paused": paused, "already_paused": already},
        )


class ResumeStages:
    name = "resume_stages"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        _orchestrator(ctx)
        return ActionPlan(self.name, "stage schedules", {"stages": _stages(ctx)})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        orchestrator = _orchestrator(ctx)
        stages = [str(s) for s in plan.arguments["stages"]]
        resumed = [s for s in stages if orchestrator.resume_stage(s)]
        return ActionResult(True, f"resumed {', '.join(resumed) or 'none'}", {"resumed": resumed})


STAGE_ACTIONS: tuple[Action, ...] = (CancelStuckStage(), PauseStages(), ResumeStages())
