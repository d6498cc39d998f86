"""Dead letters in PostgreSQL when it is configured, spilled to DuckDB while it is out of reach.

Real PostgreSQL through biomem's own client (its errors translated at the
boundary), a refused port for the outage, and a real DuckDB file for the spill.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from biomem.app import DEAD_LETTER_SCHEMA, open_app
from biomem.clients.postgres import PostgresClient
from biomem.config import load_settings
from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStatus,
    DuckDBDeadLetterStore,
    PostgresDeadLetterStore,
    ReplayRegistry,
    TieredDeadLetterStore,
)
from biomem.store import DuckDBStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def refused_url() -> str:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres:planted-pw@127.0.0.1:{port}/nowhere"


class Switch:
    """The primary's connections come from whichever client is current: up or down."""

    def __init__(self, up: PostgresClient, down: PostgresClient) -> None:
        self.up, self.down = up, down
        self.current = down

    def connect(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self.current.connection()


@pytest.fixture(autouse=True)
def no_shared_table(pg_clean_url: str) -> None:
    """pg_clean_url resets the public schema only: start without biomem's table."""
    with psycopg.connect(pg_clean_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS biomem CASCADE")


@pytest.fixture
def switch(pg_clean_url: str) -> Iterator[Switch]:
    up = PostgresClient(SecretStr(pg_clean_url), connect_timeout_s=1, acquire_timeout_s=1)
    down = PostgresClient(SecretStr(refused_url()), connect_timeout_s=1, acquire_timeout_s=1)
    yield Switch(up, down)
    up.close()
    down.close()


def shared_rows(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, status FROM biomem.dead_letters ORDER BY first_failed_at, id"
        ).fetchall()


def queue(
    store: TieredDeadLetterStore, handler: Callable[[dict[str, Any]], None]
) -> DeadLetterQueue:
    replays = ReplayRegistry()
    replays.register("send", handler)
    return DeadLetterQueue(store, replays, clock=FakeClock(), wall_clock=lambda: NOW)


def test_letters_spill_during_the_outage_and_move_to_postgresql_when_it_is_back(
    switch: Switch, store: DuckDBStore, pg_clean_url: str
) -> None:
    spill = DuckDBDeadLetterStore(store)
    tiered = TieredDeadLetterStore(PostgresDeadLetterStore(switch.connect), spill)
    tiered.ensure_schema()  # PostgreSQL is down: the spill is ready, nothing raised
    replayed: list[dict[str, Any]] = []
    dlq = queue(tiered, replayed.append)
    for n in range(3):
        dlq.put(
            "send",
            {"n": n},
            ConnectionError("refused"),
            idempotency_key=f"k{n}",
            component="postgresql",
        )
    assert len(spill.list()) == 3
    assert tiered.counts()[DeadLetterStatus.PENDING] == 3  # the truth during the outage
    assert sorted(d.payload["n"] for d in tiered.list()) == [0, 1, 2]

    switch.current = switch.up
    report = dlq.replay(None)
    assert len(report.recovered) == 3
    assert sorted(p["n"] for p in replayed) == [0, 1, 2]
    assert spill.list() == []  # every letter moved ...
    rows = shared_rows(pg_clean_url)
    assert len(rows) == 3  # ... exactly once
    assert {status for _, status in rows} == {"recovered"}


def test_a_drain_interrupted_after_adoption_leaves_one_letter(
    switch: Switch, store: DuckDBStore, pg_clean_url: str
) -> None:
    """A crash between 'inserted in PostgreSQL' and 'deleted from the spill' duplicates nothing."""
    switch.current = switch.up
    primary = PostgresDeadLetterStore(switch.connect)
    spill = DuckDBDeadLetterStore(store)
    tiered = TieredDeadLetterStore(primary, spill)
    tiered.ensure_schema()
    letter = DeadLetter(
        id="letter-1",
        operation="send",
        payload={"n": 1},
        idempotency_key="k1",
        error_class="ConnectionError",
        message="refused",
        stack="",
        attempts=1,
        first_failed_at=NOW,
        last_failed_at=NOW,
        next_attempt_at=NOW,
        status=DeadLetterStatus.PENDING,
        component="postgresql",
    )
    spill.put(letter)
    assert primary.adopt(letter)  # the first half of a drain, then the "crash"
    assert tiered.drain_spill() == 1
    assert not primary.adopt(letter)
    assert spill.list() == []
    assert shared_rows(pg_clean_url) == [("letter-1", "pending")]


def test_open_letters_under_one_key_stay_one_across_the_tiers(
    switch: Switch, store: DuckDBStore, pg_clean_url: str
) -> None:
    spill = DuckDBDeadLetterStore(store)
    tiered = TieredDeadLetterStore(PostgresDeadLetterStore(switch.connect), spill)
    tiered.ensure_schema()
    dlq = queue(tiered, lambda payload: None)
    dlq.put("send", {"v": 1}, OSError("down"), idempotency_key="same", component="postgresql")
    switch.current = switch.up
    dlq.put("send", {"v": 2}, OSError("slow"), idempotency_key="same", component="postgresql")
    assert tiered.drain_spill() == 1
    assert len(shared_rows(pg_clean_url)) == 1  # the same work, one letter


def test_requeue_waits_for_the_lease_in_the_shared_table_only(
    switch: Switch, store: DuckDBStore
) -> None:
    switch.current = switch.up
    primary = PostgresDeadLetterStore(switch.connect)
    spill = DuckDBDeadLetterStore(store)
    tiered = TieredDeadLetterStore(primary, spill, primary_lease=timedelta(minutes=15))
    tiered.ensure_schema()
    dlq = queue(tiered, lambda payload: None)
    dlq.put("send", {}, OSError("x"), idempotency_key="shared", component="postgresql")
    later = NOW + timedelta(hours=2)  # past the letter's backoff
    assert len(tiered.claim_due(later, 10)) == 1  # another worker may be replaying it now
    assert tiered.requeue_stale(later + timedelta(minutes=1)) == 0
    assert tiered.requeue_stale(later + timedelta(minutes=16)) == 1


def test_the_app_keeps_dead_letters_in_postgresql_when_configured(
    monkeypatch: pytest.MonkeyPatch, pg_clean_url: str
) -> None:
    monkeypatch.setenv("POSTGRES_DB_URL", pg_clean_url)
    application = open_app(load_settings(), clock=FakeClock())
    try:
        assert isinstance(application.dlq.store, TieredDeadLetterStore)
        letter = application.dlq.put(
            "writeback", {"run": 1}, OSError("x"), idempotency_key="wb-1", component="postgresql"
        )
        assert shared_rows(pg_clean_url) == [(letter.id, "pending")]
        assert DEAD_LETTER_SCHEMA == "biomem"
    finally:
        application.close()


def test_without_postgresql_the_dead_letters_stay_in_duckdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POSTGRES_DB_URL", raising=False)
    application = open_app(load_settings(), clock=FakeClock())
    try:
        assert isinstance(application.dlq.store, DuckDBDeadLetterStore)
    finally:
        application.close()
