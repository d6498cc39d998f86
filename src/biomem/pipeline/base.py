"""What every stage shares: the context it runs in and the result it reports."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from biomem.clients.ollama import OllamaClient
from biomem.clients.postgres import PostgresClient
from biomem.config import Settings
from biomem.store import DuckDBStore

__all__ = [
    "OllamaFactory",
    "Progress",
    "Stage",
    "StageContext",
    "StageResult",
    "get_state",
    "set_state",
]

Progress = Callable[[int, int], None]  # (done, total)
# Builds the client on a transport owned by the stage's event loop: an
# httpx.AsyncClient cannot outlive the loop it was made in.
OllamaFactory = Callable[[httpx.AsyncClient], OllamaClient]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageContext:
    """Everything a stage needs for one run.

    Attributes:
        as_of: the run's clock: "now" for a normal run, a past time when
            replaying history (``--as-of``). Stages never read the wall clock.
        ollama: builds the Ollama client; None when no LLM is to be used.
        stop: set when the process is asked to stop; stages check it between
            batches and return at a batch boundary.
        pipeline_lock: held around every run of the stages that only use DuckDB.
            A stage run outside it (writeback, which PostgreSQL may keep waiting)
            takes it just to read a consistent snapshot. Without an orchestrator
            (a stage run directly) nothing runs alongside: a no-op.
    """

    store: DuckDBStore
    settings: Settings
    as_of: datetime
    run_id: int
    ollama: OllamaFactory | None = None
    postgres: PostgresClient | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    # Monotonic seconds, for decisions that depend on elapsed time (when to commit).
    clock: Callable[[], float] = time.monotonic
    pipeline_lock: AbstractContextManager[object] = field(default_factory=nullcontext)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


@dataclass(slots=True)
class StageResult:
    """What a run of a stage did."""

    items: int = 0  # rows processed
    llm: int = 0  # of which by the LLM
    fallback: int = 0  # of which by the fallback (redone by the LLM later)
    deferred: int = 0  # work left for a later run (LLM or PostgreSQL down)
    interrupted: bool = False  # stopped at a batch boundary by shutdown
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "llm": self.llm,
            "fallback": self.fallback,
            "deferred": self.deferred,
            **self.detail,
        }


class Stage(Protocol):
    """A pipeline stage: a name, the stages it reads from, and one run."""

    name: str
    after: tuple[str, ...]

    def run(self, ctx: StageContext) -> StageResult: ...


def get_state(store: DuckDBStore, key: str, default: Any) -> Any:
    """Read a value a stage keeps between runs."""
    row = store.fetchone("SELECT value FROM pipeline_state WHERE key = ?", [key])
    return default if row is None else json.loads(row[0])


def set_state(con: Any, key: str, value: Any, now: datetime) -> None:
    """Write a kept value inside the caller's transaction."""
    con.execute(
        "INSERT INTO pipeline_state VALUES (?, ?::JSON, ?) ON CONFLICT (key) DO UPDATE"
        " SET value = excluded.value, updated_at = excluded.updated_at",
        [key, json.dumps(value), now],
    )
