"""The running application's parts, built once at the edge and closed together.

Settings → guards (one policy per dependency) → the store (through the
duckdb policy), the PostgreSQL client (through the postgresql policy), the
Ollama client factory (through the ollama policy) and the dead-letter queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from biomem.clients.llm_cache import LLMCache
from biomem.clients.postgres import PostgresClient
from biomem.config import Settings
from biomem.guards import Guards, build_guards
from biomem.pipeline.base import OllamaFactory
from biomem.pipeline.runner import ollama_factory
from biomem.resilience.breaker import BreakerState
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.deadletter import DeadLetterQueue, DuckDBDeadLetterStore, ReplayRegistry
from biomem.store import DuckDBStore

__all__ = ["App", "open_app"]


@dataclass(slots=True)
class App:
    """Everything a command or the daemon works with."""

    settings: Settings
    guards: Guards
    store: DuckDBStore
    postgres: PostgresClient | None
    dlq: DeadLetterQueue
    replays: ReplayRegistry = field(default_factory=ReplayRegistry)
    llm_cache: LLMCache = field(default_factory=LLMCache)

    def ollama_factory(self) -> OllamaFactory:
        """Clients on a caller-owned transport, all through the one ollama policy and cache."""
        return ollama_factory(self.settings, self.guards.ollama, self.llm_cache)

    def is_healthy(self, component: str) -> bool:
        """False while the component's breaker is open (its dead letters wait)."""
        breaker = self.guards.breakers.get_existing(component)
        return breaker is None or breaker.state not in (
            BreakerState.OPEN,
            BreakerState.FORCED_OPEN,
        )

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.close()
        self.store.close()


def open_app(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> App:
    """Open the store (migrated), the PostgreSQL client when configured, and the DLQ.

    The dead letters live in the DuckDB store: it is local, so a failure of
    PostgreSQL (the usual reason for a letter) can always be recorded.
    """
    guards = build_guards(settings, clock=clock)
    store = DuckDBStore.open(settings.store.path, policy=guards.duckdb)
    try:
        url = settings.postgres.url
        postgres = PostgresClient(url, policy=guards.postgresql) if url is not None else None
        dlq_store = DuckDBDeadLetterStore(store)
        dlq_store.ensure_schema()
        replays = ReplayRegistry()
        dlq = DeadLetterQueue(dlq_store, replays, clock=guards.clock)
        # One process replays (DuckDB has one writer): anything left mid-replay
        # by a crash goes back to pending.
        dlq.requeue_stale()
    except BaseException:
        store.close()
        raise
    return App(settings, guards, store, postgres, dlq, replays)
