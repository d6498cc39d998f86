"""`biomem dlq` in a subprocess on a real DuckDB store: replay by id, --all with --filter,
--rate pacing, purge by age, and bad option values refused before anything is opened."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from biomem.resilience.deadletter import (
    DeadLetterQueue,
    DeadLetterStatus,
    DuckDBDeadLetterStore,
    ReplayRegistry,
)
from biomem.resilience.errors import DatabaseUnavailable
from biomem.store import DuckDBStore
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@contextmanager
def letters_in(
    store_path: Path, *, at: datetime = NOW, max_attempts: int = 8
) -> Iterator[DeadLetterQueue]:
    """A queue on the store file (closed afterwards, so the CLI can open it), its time ``at``.

    No handler is registered: a letter replayed here fails (and, with
    ``max_attempts=1``, is dead at ``at``).
    """
    store = DuckDBStore.open(store_path)
    try:
        letters = DuckDBDeadLetterStore(store)
        letters.ensure_schema()
        yield DeadLetterQueue(
            letters, ReplayRegistry(), wall_clock=lambda: at, max_attempts=max_attempts
        )
    finally:
        store.close()


def put(queue: DeadLetterQueue, operation: str, component: str, error: Exception, key: str) -> str:
    return queue.put(operation, {}, error, idempotency_key=key, component=component).id


def listed(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every letter `biomem dlq list --json` shows, by id."""
    result = run_cli("dlq", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {letter["id"]: letter for letter in map(json.loads, result.stdout.splitlines())}


def test_replay_by_id_and_all_with_filters_rerun_the_real_operations(
    pg_clean_url: str, store_path: Path
) -> None:
    """`replay ID` runs that letter's operation only; `replay --all --filter ...` runs only the
    letters every filter matches; the others wait untouched."""
    with psycopg.connect(pg_clean_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.memories (id int PRIMARY KEY, content text, created_at"
            " timestamptz NOT NULL, updated_at timestamptz NOT NULL, metadata jsonb);"
            "INSERT INTO public.memories SELECT g, 'memory ' || g, now(), now(), '{}'"
            " FROM generate_series(1, 3) g"
        )
    with letters_in(store_path) as queue:
        writeback = put(
            queue, "writeback", "postgresql", DatabaseUnavailable("postgresql", "down"), "wb"
        )
        ingest = put(
            queue, "ingest_postgres", "postgresql", psycopg.OperationalError("refused"), "ing"
        )
        llm = put(queue, "enrich_later", "ollama", TimeoutError("no answer"), "llm")
    env = {"POSTGRES_DB_URL": pg_clean_url, "OLLAMA_URL": "http://127.0.0.1:1"}

    by_id = run_cli("dlq", "replay", writeback, env=env, timeout=120)
    assert by_id.returncode == 0, by_id.stderr
    assert "replayed 1: recovered 1, failed 0" in by_id.stdout
    after = listed(env)
    assert after[writeback]["status"] == "recovered"
    assert after[ingest]["status"] == after[llm]["status"] == "pending"

    dry = run_cli("dlq", "replay", "--all", "--dry-run", "--filter", "error=TimeoutError", env=env)
    assert dry.returncode == 0 and "would replay 1" in dry.stdout and llm in dry.stdout

    filtered = run_cli(
        "dlq",
        "replay",
        "--all",
        "--filter",
        "component=postgresql",
        "--filter",
        "error=OperationalError",
        env=env,
        timeout=120,
    )
    assert filtered.returncode == 0, filtered.stderr
    assert "replayed 1: recovered 1, failed 0" in filtered.stdout
    after = listed(env)
    assert after[ingest]["status"] == "recovered"
    assert after[llm]["status"] == "pending" and after[llm]["attempts"] == 1
    with DuckDBStore.open(store_path) as store:  # the ingest really ran
        assert store.execute("SELECT count(*) FROM memories") == [(3,)]


def test_rate_paces_the_replays(store_path: Path) -> None:
    """`--rate 120/min` replays two a second: the replays' log lines are half a second apart."""
    with letters_in(store_path) as queue:
        for n in range(3):
            put(queue, "gone_operation", "postgresql", ConnectionError("refused"), f"k{n}")
    result = run_cli("dlq", "replay", "--all", "--rate", "120/min")
    assert result.returncode == 1  # no handler for the operation: each replay fails, fast
    assert "replayed 3: recovered 0, failed 3" in result.stdout
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    times = [
        datetime.fromisoformat(event["timestamp"])
        for event in events
        if event["event"] == "dead_letter_replay_failed"
    ]
    assert len(times) == 3
    # Sleeping never ends early, so the lower bound holds however slow the machine is.
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.45 for gap in gaps), gaps


def test_purge_dead_older_than_an_age_keeps_younger_and_pending_letters(store_path: Path) -> None:
    """`purge --status dead --older-than 7d` deletes the dead letter of ten days ago only; a plain
    number still counts days."""
    with letters_in(store_path, at=NOW - timedelta(days=10), max_attempts=1) as queue:
        old_dead = put(queue, "gone_operation", "postgresql", ConnectionError("x"), "old")
        queue.replay([old_dead])
        old_pending = put(queue, "gone_operation", "postgresql", ConnectionError("x"), "pending")
    with letters_in(store_path, at=NOW - timedelta(days=1), max_attempts=1) as queue:
        young_dead = put(queue, "gone_operation", "postgresql", ConnectionError("x"), "young")
        queue.replay([young_dead])
    before = listed()
    assert before[old_dead]["status"] == before[young_dead]["status"] == "dead"

    purged = run_cli("dlq", "purge", "--status", "dead", "--older-than", "7d")
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 dead letters" in purged.stdout
    assert set(listed()) == {young_dead, old_pending}

    in_days = run_cli("dlq", "purge", "--status", "dead", "--older-than", "0.5")
    assert in_days.returncode == 0 and "purged 1 dead letters" in in_days.stdout
    assert set(listed()) == {old_pending}
    assert listed()[old_pending]["status"] == DeadLetterStatus.PENDING.value


@pytest.mark.parametrize(
    ("args", "start"),
    [
        pytest.param(("replay", "--all", "--rate", "fast"), "--rate 'fast': accepts", id="rate"),
        pytest.param(("replay", "--all", "--rate", "0/s"), "--rate '0/s': accepts", id="rate-0"),
        pytest.param(
            ("replay", "--all", "--rate", "5/fortnight"), "--rate '5/fortnight'", id="rate-unit"
        ),
        pytest.param(
            ("replay", "--all", "--filter", "colour=red"),
            "--filter 'colour=red': accepts KEY=VALUE with KEY one of operation, component, error",
            id="filter-key",
        ),
        pytest.param(
            ("replay", "--all", "--filter", "operation"), "--filter 'operation'", id="filter-="
        ),
        pytest.param(
            ("list", "--filter", "status=dead"), "--filter 'status=dead'", id="list-filter"
        ),
        pytest.param(("replay",), "replay: give letter ids or --all", id="no-ids"),
        pytest.param(
            ("replay", "--all", "--status", "recovered"), "--status 'recovered'", id="status"
        ),
        pytest.param(
            ("purge", "--older-than", "7w"),
            "--older-than '7w': accepts an age such as 7d, 12h, 30m or 90s, or a number of days",
            id="age-unit",
        ),
        pytest.param(("purge", "--older-than", "-1d"), "--older-than '-1d'", id="age-negative"),
        pytest.param(("purge", "--status", "pending"), "--status 'pending'", id="purge-pending"),
    ],
)
def test_bad_option_values_stop_with_one_line_exit_2_before_anything_opens(
    args: tuple[str, ...], start: str, store_path: Path
) -> None:
    """A bad value is one stderr line naming the option and what it accepts, exit 2, and the
    store is never even opened."""
    result = run_cli("dlq", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"biomem: {start}")
    assert not store_path.exists()
