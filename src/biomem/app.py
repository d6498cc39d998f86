"""The running application's parts, built once at the edge and closed together.

Settings → guards (one policy per dependency) → the store (through the
duckdb policy), the PostgreSQL client (through the postgresql policy), the
Ollama client factory (through the ollama policy) and the dead-letter queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import SecretStr

from biomem.clients.llm_cache import LLMCache
from biomem.clients.postgres import PostgresClient
from biomem.config import Settings
from biomem.guards import Guards, build_guards
from biomem.pipeline.base import OllamaFactory
from biomem.pipeline.runner import ollama_factory
from biomem.resilience.breaker import BreakerState
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.deadletter import (
    DeadLetterQueue,
    DeadLetterStore,
    DuckDBDeadLetterStore,
    PostgresDeadLetterStore,
    ReplayRegistry,
    TieredDeadLetterStore,
)
from biomem.store import DuckDBStore

__all__ = ["DEAD_LETTER_SCHEMA", "App", "open_app", "postgres_client"]

#: The PostgreSQL schema of the shared dead-letter table.
DEAD_LETTER_SCHEMA = "biomem"
#: A letter another worker claimed in the shared table counts as abandoned after this long.
REPLAY_LEASE = timedelta(minutes=15)


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


def postgres_client(url: SecretStr, settings: Settings, guards: Guards) -> PostgresClient:
    """The PostgreSQL client as configured under ``[resilience.postgresql]``.

    The pool holds as many connections as the policy's bulkhead admits calls.
    """
    cfg = settings.resilience.postgresql
    return PostgresClient(
        url,
        max_size=cfg.max_connections,
        connect_timeout_s=cfg.connect_timeout_seconds,
        acquire_timeout_s=cfg.acquire_timeout_seconds,
        statement_timeout_s=cfg.statement_timeout_seconds,
        call_timeout_s=cfg.call_timeout_seconds,
        policy=guards.postgresql,
    )


def open_app(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> App:
    """Open the store (migrated), the PostgreSQL client when configured, and the DLQ.

    Embedded (no POSTGRES_DB_URL), the dead letters live in the DuckDB store.
    With PostgreSQL configured they live in its ``biomem.dead_letters`` table,
    shared by every worker; while PostgreSQL is out of reach (the usual
    reason for a letter) they spill to the DuckDB table and move over when it
    answers again, so no letter is ever lost to the outage it records.
    """
    guards = build_guards(settings, clock=clock)
    store = DuckDBStore.open(
        settings.store.path,
        policy=guards.duckdb,
        call_timeout_s=settings.resilience.duckdb.call_timeout_seconds,
    )
    try:
        url = settings.postgres.url
        postgres = postgres_client(url, settings, guards) if url is not None else None
        local = DuckDBDeadLetterStore(store)
        dlq_store: DeadLetterStore = local
        if postgres is not None:
            shared = PostgresDeadLetterStore(postgres.connection, schema=DEAD_LETTER_SCHEMA)
            dlq_store = TieredDeadLetterStore(shared, local, primary_lease=REPLAY_LEASE)
        dlq_store.ensure_schema()
        replays = ReplayRegistry()
        dlq = DeadLetterQueue(dlq_store, replays, clock=guards.clock)
        # Anything this process left mid-replay by a crash goes back to
        # pending (the shared table waits for a lease: others may be at work).
        dlq.requeue_stale()
    except BaseException:
        store.close()
        raise
    return App(settings, guards, store, postgres, dlq, replays)
