"""Actions on the data stores and the dead letters.

* ``reset_postgres_pool`` — a new, empty pool in place of the old one, whose
  connections are closed: connections the server ended stop failing calls.
* ``checkpoint_duckdb`` — the WAL written into the database file.
* ``reopen_duckdb`` — the connection closed and the file opened again; the
  store is then probed with a query.
* ``replay_dead_letters`` — the due dead letters whose dependency is healthy
  are replayed now (the real operations run again), as the scheduled replay
  job does.
"""

from __future__ import annotations

from biomem.recovery.actions import (
    Action,
    ActionContext,
    ActionPlan,
    ActionResult,
    ActionUnavailable,
)
from biomem.resilience.deadletter import DeadLetterStatus

__all__ = ["STORE_ACTIONS"]

_POOL_CLOSE_TIMEOUT_S = 5.0
_CHECKPOINT_TIMEOUT_S = 30.0
_REOPEN_TIMEOUT_S = 10.0
_REPLAY_WAIT_S = 5.0  # the scheduled replay may be at work: do not queue behind it
_REPLAY_LIMIT = 50  # as the scheduled job: the rest waits for the next attempt


class ResetPostgresPool:
    name = "reset_postgres_pool"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        client = ctx.app.postgres
        if client is None:
            raise ActionUnavailable("no PostgreSQL configured (POSTGRES_DB_URL unset)")
        stats = client.get_stats()
        return ActionPlan(
            self.name,
            f"{client.name} connection pool",
            {
                "close_timeout_s": _POOL_CLOSE_TIMEOUT_S,
                "connections": int(stats.get("pool_size", 0)),
            },
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        client = ctx.app.postgres
        if client is None:  # pragma: no cover - plan() said so
            raise ActionUnavailable("no PostgreSQL configured")
        dropped = client.reset_pool(close_timeout_s=float(plan.arguments["close_timeout_s"]))
        return ActionResult(
            True,
            f"pool replaced: {dropped['connections_closed']} connection(s) closed"
            f" ({dropped['connections_in_use']} in use, closed when given back)",
            dropped,
        )


class CheckpointDuckDB:
    name = "checkpoint_duckdb"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        store = ctx.app.store
        if store.closed:
            raise ActionUnavailable("the store is closed")
        return ActionPlan(self.name, str(store.path), {"timeout_s": _CHECKPOINT_TIMEOUT_S})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        wal_bytes = ctx.app.store.checkpoint(timeout_s=float(plan.arguments["timeout_s"]))
        return ActionResult(
            True, f"checkpointed: {wal_bytes} WAL bytes written", {"wal_bytes": wal_bytes}
        )


class ReopenDuckDB:
    name = "reopen_duckdb"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        return ActionPlan(self.name, str(ctx.app.store.path), {"timeout_s": _REOPEN_TIMEOUT_S})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        store = ctx.app.store
        store.reopen(timeout_s=float(plan.arguments["timeout_s"]))
        row = store.fetchone("SELECT count(*) FROM memories")
        memories = int(row[0]) if row else 0
        return ActionResult(
            True, f"reopened: the store answers ({memories} memories)", {"memories": memories}
        )


class ReplayDeadLetters:
    name = "replay_dead_letters"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        if ctx.orchestrator is None:
            raise ActionUnavailable("no orchestrator in this process (the replay handlers)")
        pending = ctx.observation.dead_letters
        if pending is None:
            pending = ctx.app.dlq.counts().get(DeadLetterStatus.PENDING, 0)
        return ActionPlan(
            self.name, "dead-letter queue", {"limit": _REPLAY_LIMIT, "pending": pending}
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        orchestrator = ctx.orchestrator
        if orchestrator is None:  # pragma: no cover - plan() said so
            raise ActionUnavailable("no orchestrator in this process")
        report = orchestrator.replay_dead_letters(wait_s=_REPLAY_WAIT_S)
        if report is None:
            raise ActionUnavailable("another replay of the dead letters is running (or stopping)")
        detail = {
            "selected": len(report.selected),
            "recovered": len(report.recovered),
            "failed": len(report.failed),
            "dead": len(report.dead),
            "skipped": len(report.skipped),
        }
        summary = (
            f"replayed {detail['selected']}: recovered {detail['recovered']}, failed "
            f"{detail['failed']}, dead {detail['dead']}, skipped {detail['skipped']}"
        )
        return ActionResult(not report.failed and not report.dead, summary, detail)


STORE_ACTIONS: tuple[Action, ...] = (
    ResetPostgresPool(),
    CheckpointDuckDB(),
    ReopenDuckDB(),
    ReplayDeadLetters(),
)
