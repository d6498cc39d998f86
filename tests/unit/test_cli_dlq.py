"""`biomem dlq replay`'s options reach the dead-letter queue as given (fake clock, no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from biomem.cli_dlq import replay_request, run_replay
from biomem.cli_values import LetterFilter, OptionValueError, UsageError
from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import (
    DeadLetterQueue,
    DeadLetterStatus,
    DuckDBDeadLetterStore,
    ReplayRegistry,
)
from biomem.store import DuckDBStore

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ran() -> list[tuple[str, float]]:
    """(payload uid, fake time) of every replay that ran."""
    return []


@pytest.fixture
def queue(store: DuckDBStore, clock: FakeClock, ran: list[tuple[str, float]]) -> DeadLetterQueue:
    letters = DuckDBDeadLetterStore(store)
    letters.ensure_schema()
    registry = ReplayRegistry()
    registry.register("write", lambda payload: ran.append((payload["uid"], clock.monotonic())))
    return DeadLetterQueue(
        letters,
        registry,
        clock=clock,
        wall_clock=lambda: EPOCH + timedelta(seconds=clock.monotonic()),
    )


def put(queue: DeadLetterQueue, uid: str, *, component: str, error: Exception) -> str:
    return queue.put("write", {"uid": uid}, error, idempotency_key=uid, component=component).id


def test_the_rate_given_on_the_command_line_paces_the_replay(
    queue: DeadLetterQueue, clock: FakeClock, ran: list[tuple[str, Any]]
) -> None:
    """--rate 120/min reaches the queue as 2 a second: half a second between replays."""
    for uid in ("a", "b", "c"):
        put(queue, uid, component="postgresql", error=ConnectionError("refused"))
    request = replay_request(None, replay_all=True, rate="120/min")
    assert request.rate_per_s == pytest.approx(2.0)
    report = run_replay(queue, request)
    assert len(report.recovered) == 3
    assert clock.sleeps == [0.5, 0.5]
    assert [when for _, when in ran] == [0.0, 0.5, 1.0]


def test_filters_select_the_letters_replayed_by_all_and_by_id(
    queue: DeadLetterQueue, ran: list[tuple[str, Any]]
) -> None:
    """--all with --filter replays only matching letters; a given id that does not match is
    skipped, untouched."""
    pg = put(queue, "pg", component="postgresql", error=ConnectionError("refused"))
    slow = put(queue, "slow", component="ollama", error=TimeoutError("no answer"))
    request = replay_request(
        None, replay_all=True, filters=["component=ollama", "error=TimeoutError"]
    )
    assert request.where == LetterFilter(component="ollama", error_class="TimeoutError")
    assert run_replay(queue, request).recovered == (slow,)
    by_id = run_replay(queue, replay_request([pg], replay_all=False, filters=["component=ollama"]))
    assert by_id.skipped == (pg,) and by_id.recovered == ()
    untouched = queue.get(pg)
    assert untouched is not None and untouched.status is DeadLetterStatus.PENDING
    assert run_replay(queue, replay_request([pg], replay_all=False)).recovered == (pg,)
    assert [uid for uid, _ in ran] == ["slow", "pg"]


def test_dry_run_and_dead_letters_are_passed_through(
    queue: DeadLetterQueue, ran: list[tuple[str, Any]]
) -> None:
    """--dry-run runs nothing; --status dead selects dead letters only."""
    put(queue, "a", component="postgresql", error=ConnectionError("refused"))
    dry = run_replay(queue, replay_request(None, replay_all=True, dry_run=True))
    assert dry.dry_run and len(dry.selected) == 1 and ran == []
    assert run_replay(queue, replay_request(None, replay_all=True, status="dead")).selected == ()


@pytest.mark.parametrize(
    ("ids", "replay_all", "options", "message"),
    [
        pytest.param(None, False, {}, "replay: give letter ids or --all", id="neither"),
        pytest.param(["x"], True, {}, "replay: give letter ids or --all, not both", id="both"),
        pytest.param(None, True, {"rate": "fast"}, "--rate 'fast': accepts", id="rate"),
        pytest.param(None, True, {"filters": ["x=1"]}, "--filter 'x=1': accepts", id="filter"),
        pytest.param(
            None, True, {"status": "recovered"}, "--status 'recovered': accepts", id="status"
        ),
    ],
)
def test_unusable_replay_options_are_refused_before_anything_runs(
    ids: list[str] | None, replay_all: bool, options: dict[str, Any], message: str
) -> None:
    """A replay request with a bad option is refused with one line saying what is wrong."""
    with pytest.raises(UsageError) as caught:
        replay_request(ids, replay_all=replay_all, **options)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, OptionValueError) == message.startswith("--")
