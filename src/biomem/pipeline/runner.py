"""Running stages: dependency order, one recorded run each, failures contained.

A stage that fails is recorded as failed with its error; the stages that read
from it are skipped in that pass (their inputs are stale), the others run.

:data:`POSTGRES_STAGES` are the stages that wait on PostgreSQL: the
orchestrator runs them outside its pipeline lock, so that a PostgreSQL that
does not answer never holds up the stages that need DuckDB alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime

import httpx

from biomem.clients.llm_cache import LLMCache
from biomem.clients.ollama import OllamaClient
from biomem.clients.postgres import PostgresClient
from biomem.config import Settings
from biomem.logging import get_logger
from biomem.pipeline.base import OllamaFactory, Progress, Stage, StageContext, StageResult
from biomem.pipeline.consolidation import ConsolidationStage
from biomem.pipeline.dreams import DreamStage
from biomem.pipeline.homeostasis import HomeostasisStage
from biomem.pipeline.long_term import LongTermStage
from biomem.pipeline.short_term import ShortTermStage
from biomem.pipeline.working_memory import WorkingMemoryStage
from biomem.pipeline.writeback import WritebackStage
from biomem.resilience.errors import BiomemError
from biomem.resilience.policy import Policy
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus, record_run

__all__ = [
    "POSTGRES_STAGES",
    "STAGES",
    "StageOutcome",
    "ollama_factory",
    "resolve_stages",
    "run_stage",
    "run_stages",
]

log = get_logger(__name__)


def _ordered(stages: Iterable[Stage]) -> dict[str, Stage]:
    """Topological order of the stages by ``after``; stable otherwise."""
    pending = {s.name: s for s in stages}
    ordered: dict[str, Stage] = {}
    while pending:
        ready = [
            n for n, s in pending.items() if all(d in ordered or d not in pending for d in s.after)
        ]
        if not ready:
            raise RuntimeError(f"stage dependencies form a cycle: {sorted(pending)}")
        for name in ready:
            ordered[name] = pending.pop(name)
    return ordered


STAGES: dict[str, Stage] = _ordered(
    [
        ShortTermStage(),
        WorkingMemoryStage(),
        ConsolidationStage(),
        LongTermStage(),
        HomeostasisStage(),
        DreamStage(),
        WritebackStage(),
    ]
)


#: The stages that talk to PostgreSQL (the others use DuckDB, and Ollama).
POSTGRES_STAGES: frozenset[str] = frozenset({WritebackStage.name})


def ollama_factory(
    settings: Settings, policy: Policy | None, cache: LLMCache | None = None
) -> OllamaFactory:
    """Build Ollama clients from the settings on a caller-owned transport.

    The product passes the process's ollama policy and LLM cache (see ``biomem.app``).
    """
    cfg = settings.ollama

    def make(http: httpx.AsyncClient) -> OllamaClient:
        return OllamaClient(
            http,
            base_url=cfg.url,
            model=cfg.model,
            embedding_model=cfg.embedding_model,
            timeout_s=cfg.timeout_seconds,
            policy=policy,
            cache=cache,
        )

    return make


def resolve_stages(names: Sequence[str]) -> list[str]:
    """Validate stage names and return them in dependency order (all when empty)."""
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    return [n for n in STAGES if not names or n in names]


@dataclass(slots=True)
class StageOutcome:
    """How one stage's run ended."""

    stage: str
    status: RunStatus | str  # a RunStatus, or "skipped"
    result: StageResult
    seconds: float
    error: str | None = None


def run_stage(
    store: DuckDBStore,
    settings: Settings,
    stage: Stage,
    *,
    as_of: datetime,
    ollama: OllamaFactory | None,
    stop: threading.Event,
    postgres: PostgresClient | None = None,
    progress: Progress | None = None,
    pipeline_lock: AbstractContextManager[object] | None = None,
) -> StageOutcome:
    """Run one stage, recorded in the runs table; biomem errors become a failed outcome.

    ``pipeline_lock``: see :attr:`StageContext.pipeline_lock`.
    """
    started = time.perf_counter()
    try:
        with record_run(store, stage.name) as run:
            ctx = StageContext(
                store=store,
                settings=settings,
                as_of=as_of,
                run_id=run.run_id,
                ollama=ollama,
                postgres=postgres,
                stop=stop,
                progress=progress,
                pipeline_lock=pipeline_lock if pipeline_lock is not None else nullcontext(),
            )
            result = stage.run(ctx)
            run.counts = result.as_dict()
            if result.interrupted:
                run.status = RunStatus.INTERRUPTED
            elif result.deferred and not result.items:
                run.status = RunStatus.DEFERRED
    except BiomemError as exc:
        log.error("stage_failed", stage=stage.name, error=str(exc))
        return StageOutcome(
            stage.name, RunStatus.FAILED, StageResult(), time.perf_counter() - started, str(exc)
        )
    seconds = time.perf_counter() - started
    log.info("stage_done", stage=stage.name, seconds=round(seconds, 3), **result.as_dict())
    return StageOutcome(stage.name, run.status, result, seconds)


def run_stages(
    store: DuckDBStore,
    settings: Settings,
    names: Sequence[str],
    *,
    as_of: datetime,
    ollama: OllamaFactory | None,
    stop: threading.Event,
    postgres: PostgresClient | None = None,
    progress_for: Callable[[str], Progress | None] = lambda _name: None,
    pipeline_lock: AbstractContextManager[object] | None = None,
    earlier: Sequence[StageOutcome] = (),
) -> list[StageOutcome]:
    """Run the named stages (all when empty) in dependency order.

    Args:
        pipeline_lock: see :attr:`StageContext.pipeline_lock`.
        earlier: outcomes from earlier in the same pass: a stage that failed
            there (or was skipped for it) skips its dependants here too.
    """
    outcomes: list[StageOutcome] = []
    failed: set[str] = {
        o.stage for o in earlier if o.status == RunStatus.FAILED or o.status == "skipped"
    }
    for name in resolve_stages(names):
        stage = STAGES[name]
        if stop.is_set():
            break
        blocked = [d for d in stage.after if d in failed]
        if blocked:
            failed.add(name)
            outcomes.append(
                StageOutcome(name, "skipped", StageResult(), 0.0, f"{', '.join(blocked)} failed")
            )
            continue
        outcome = run_stage(
            store,
            settings,
            stage,
            as_of=as_of,
            ollama=ollama,
            stop=stop,
            postgres=postgres,
            progress=progress_for(name),
            pipeline_lock=pipeline_lock,
        )
        if outcome.status == RunStatus.FAILED:
            failed.add(name)
        outcomes.append(outcome)
    return outcomes
