"""The dead-letter queue on biomem's DuckDB store, with a fake clock: no sleeping."""

from __future__ import annotations

import ast
import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import biomem.resilience._dlq_sql
import biomem.resilience.deadletter
from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import (
    DeadLetter,
    DeadLetterDead,
    DeadLetterEvent,
    DeadLetterFailed,
    DeadLetterQueue,
    DeadLetterRecovered,
    DeadLetterStatus,
    DuckDBDeadLetterStore,
    ReplayRegistry,
    UnknownOperationError,
    backoff_delay_s,
)
from biomem.resilience.errors import InputError
from biomem.resilience.redact import redact_value
from biomem.store import DuckDBStore

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PENDING, REPLAYING = DeadLetterStatus.PENDING, DeadLetterStatus.REPLAYING
RECOVERED, DEAD = DeadLetterStatus.RECOVERED, DeadLetterStatus.DEAD


class FixedRandom(random.Random):
    """A jitter source that always draws the same fraction of the window."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


def failure(
    message: str = "connection refused", cls: type[Exception] = ConnectionError
) -> Exception:
    """A raised (so traceback-carrying) exception."""
    try:
        raise cls(message)
    except cls as exc:
        return exc


def raising(error: Exception) -> Callable[[dict[str, Any]], None]:
    """A handler whose operation always fails with ``error``."""

    def handler(payload: dict[str, Any]) -> None:
        raise error

    return handler


@pytest.fixture
def letters(store: DuckDBStore) -> DuckDBDeadLetterStore:
    dlq_store = DuckDBDeadLetterStore(store)
    dlq_store.ensure_schema()
    return dlq_store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall(clock: FakeClock) -> Callable[[], datetime]:
    """Wall time that moves with the fake clock (so its sleeps move it too)."""
    return lambda: EPOCH + timedelta(seconds=clock.monotonic())


@pytest.fixture
def registry() -> ReplayRegistry:
    return ReplayRegistry()


@pytest.fixture
def events() -> list[DeadLetterEvent]:
    return []


@pytest.fixture
def make_queue(
    letters: DuckDBDeadLetterStore,
    registry: ReplayRegistry,
    clock: FakeClock,
    wall: Callable[[], datetime],
    events: list[DeadLetterEvent],
) -> Callable[..., DeadLetterQueue]:
    def make(**options: Any) -> DeadLetterQueue:
        options.setdefault("rng", FixedRandom(0.5))
        options.setdefault("listeners", [events.append])
        return DeadLetterQueue(letters, registry, clock=clock, wall_clock=wall, **options)

    return make


@pytest.fixture
def queue(make_queue: Callable[..., DeadLetterQueue]) -> DeadLetterQueue:
    return make_queue()


@pytest.fixture
def calls(registry: ReplayRegistry) -> list[dict[str, Any]]:
    """Payloads the registered operation "write" was run with."""
    seen: list[dict[str, Any]] = []
    registry.register("write", seen.append)
    return seen


def put(queue: DeadLetterQueue, key: str = "k1", **options: Any) -> DeadLetter:
    options.setdefault("operation", "write")
    options.setdefault("payload", {"uid": key})
    options.setdefault("component", "postgresql")
    return queue.put(
        options.pop("operation"),
        options.pop("payload"),
        options.pop("error", failure()),
        idempotency_key=key,
        **options,
    )


def test_put_stores_a_complete_letter_readable_by_get_list_and_counts(
    queue: DeadLetterQueue,
) -> None:
    """A put letter is pending, due after jittered base delay, and visible to every reader."""
    first = put(queue, "k1")
    second = put(queue, "k2", operation="embed", component="ollama")
    assert queue.get(first.id) == first
    assert first.status is PENDING and first.attempts == 1
    assert first.first_failed_at == first.last_failed_at == EPOCH
    assert first.next_attempt_at == EPOCH + timedelta(seconds=15)  # 0.5 of the 30 s window
    assert first.error_class == "ConnectionError" and first.message == "connection refused"
    assert first.payload == {"uid": "k1"} and first.component == "postgresql"
    assert {d.id for d in queue.list(PENDING)} == {first.id, second.id}
    assert [d.id for d in queue.list(operation="embed")] == [second.id]
    assert queue.list(RECOVERED) == []
    assert queue.counts() == {PENDING: 2, REPLAYING: 0, RECOVERED: 0, DEAD: 0}
    assert queue.oldest_pending() == EPOCH
    assert queue.get("no-such-id") is None


def test_same_idempotency_key_updates_the_open_letter(
    queue: DeadLetterQueue, clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """A second put under an open letter's key takes the new error, spends no attempt, and
    makes no new letter."""
    first = put(queue, "k1")
    clock.advance(10)
    again = put(queue, "k1", error=failure("timeout", TimeoutError), payload={"uid": "k1", "v": 2})
    assert again.id == first.id
    assert again.attempts == 1 and again.error_class == "TimeoutError"
    assert again.payload == {"uid": "k1", "v": 2}
    assert again.first_failed_at == EPOCH and again.last_failed_at == EPOCH + timedelta(seconds=10)
    assert again.next_attempt_at == first.next_attempt_at
    assert queue.counts()[PENDING] == 1

    clock.advance(3600)
    assert queue.replay_due().recovered == (first.id,)
    fresh = put(queue, "k1")  # the recovered letter is closed: a new failure is a new letter
    assert fresh.id != first.id and fresh.attempts == 1


def test_secrets_are_redacted_except_keep_keys(queue: DeadLetterQueue) -> None:
    """Message, stack and payload go through the redactor; fields in keep_keys stay verbatim."""
    error = failure("cannot reach postgresql://bio:hunter2@db/x\npassword=hunter2 retry later")
    payload = {
        "dsn": "postgresql://bio:hunter2@db/x",
        "api_key": "k-123",
        "note": "sent with Bearer abc.def",
        "memory": {"password": "pw1", "text": "hello"},
        "uid": "u1",
    }
    letter = put(queue, payload=payload, error=error, keep_keys=["dsn"])
    stored = queue.get(letter.id)
    assert stored is not None
    assert "hunter2" not in stored.message and "\n" not in stored.message
    assert stored.message.startswith("cannot reach postgresql://bio:***@db/x")
    assert "hunter2" not in stored.stack and "ConnectionError" in stored.stack
    assert stored.payload["dsn"] == "postgresql://bio:hunter2@db/x"  # replay needs it
    assert stored.payload == {
        key: value if key == "dsn" else redact_value(key, value) for key, value in payload.items()
    }
    masked = str({key: value for key, value in stored.payload.items() if key != "dsn"})
    for secret in ("k-123", "abc.def", "pw1"):
        assert secret not in masked
    assert stored.payload["uid"] == "u1" and stored.payload["memory"]["text"] == "hello"


def test_long_messages_and_stacks_are_truncated(queue: DeadLetterQueue) -> None:
    """The message is one line of at most 500 characters; the stack keeps its last 8 KiB."""
    letter = put(queue, error=failure("line\n" * 20_000 + "THE END"))
    assert len(letter.message) <= 500 and "\n" not in letter.message
    assert letter.message.endswith("…")
    assert len(letter.stack.encode("utf-8")) <= 8 * 1024
    assert letter.stack.startswith("…[truncated]") and letter.stack.rstrip().endswith("THE END")


def test_a_payload_that_is_not_json_is_refused(queue: DeadLetterQueue) -> None:
    """A payload replay could not read back is an input error, and nothing is stored."""
    with pytest.raises(InputError, match="not JSON-serialisable"):
        put(queue, payload={"when": object()})
    assert queue.list() == []


def test_claim_due_respects_next_attempt_at_and_limit(
    queue: DeadLetterQueue, letters: DuckDBDeadLetterStore
) -> None:
    """Only letters whose time has come are claimed, each once, at most `limit` at a time."""
    ids = {put(queue, f"k{i}").id for i in range(3)}
    due = EPOCH + timedelta(seconds=15)
    assert letters.claim_due(due - timedelta(microseconds=1), 10) == []
    first = letters.claim_due(due, 2)
    assert len(first) == 2 and all(d.status is REPLAYING and d.claimed_at == due for d in first)
    rest = letters.claim_due(due, 10)
    assert {d.id for d in first + rest} == ids and len(rest) == 1
    assert letters.claim_due(due + timedelta(days=1), 10) == []


@given(
    attempts=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0, max_value=1e4),
    extra=st.floats(min_value=0, max_value=1e6),
    fraction=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_full_jitter_under_a_capped_doubling(
    attempts: int, base: float, extra: float, fraction: float
) -> None:
    """The delay lies in [0, min(cap, base·2^(attempts-1))], scaled by the drawn fraction."""
    cap = base + extra
    delay = backoff_delay_s(attempts, base_delay_s=base, max_delay_s=cap, rng=FixedRandom(fraction))
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 64))
    assert 0 <= delay <= ceiling
    assert delay == pytest.approx(fraction * ceiling)


def test_backoff_with_real_jitter_stays_in_bounds() -> None:
    """A seeded real generator spreads delays across the window, never past it."""
    rng = random.Random(7)
    delays = [backoff_delay_s(3, base_delay_s=30, max_delay_s=3600, rng=rng) for _ in range(500)]
    assert all(0 <= d <= 120 for d in delays)
    assert min(delays) < 20 and max(delays) > 100  # jittered, not fixed


def test_failed_replays_back_off_exponentially_up_to_the_cap(
    make_queue: Callable[..., DeadLetterQueue], registry: ReplayRegistry, clock: FakeClock
) -> None:
    """Each failure doubles the wait (30, 60, 120 s …) until max_delay_s caps it."""

    @registry.register("write")
    def still_down(payload: dict[str, Any]) -> None:
        raise ConnectionError("still down")

    queue = make_queue(rng=FixedRandom(1.0), max_delay_s=200, max_attempts=10)
    letter = put(queue)
    waits = [letter.next_attempt_at - letter.last_failed_at]
    for _ in range(5):
        clock.advance(
            (
                letter.next_attempt_at - (EPOCH + timedelta(seconds=clock.monotonic()))
            ).total_seconds()
        )
        assert queue.replay_due().failed == (letter.id,)
        stored = queue.get(letter.id)
        assert stored is not None
        letter = stored
        waits.append(letter.next_attempt_at - letter.last_failed_at)
    assert [w.total_seconds() for w in waits] == [30, 60, 120, 200, 200, 200]
    assert letter.attempts == 6 and letter.status is PENDING


def test_letter_is_dead_after_max_attempts_and_the_event_is_emitted(
    make_queue: Callable[..., DeadLetterQueue],
    registry: ReplayRegistry,
    clock: FakeClock,
    events: list[DeadLetterEvent],
) -> None:
    """With max_attempts=3 the original failure and two failed replays make the letter DEAD."""
    registry.register("write", raising(ValueError("bad row")))
    queue = make_queue(max_attempts=3)
    letter = put(queue)
    clock.advance(3600)
    assert queue.replay_due().failed == (letter.id,)
    clock.advance(3600)
    report = queue.replay_due()
    assert report.dead == (letter.id,) and report.failed == ()
    dead = queue.get(letter.id)
    assert dead is not None and dead.status is DEAD and dead.attempts == 3
    assert [type(e) for e in events] == [DeadLetterFailed, DeadLetterDead]
    assert events[-1].letter == dead
    clock.advance(86_400)
    assert queue.replay_due().selected == ()  # never replayed on its own again


def test_replay_runs_the_registered_handler_for_real(
    queue: DeadLetterQueue,
    registry: ReplayRegistry,
    store: DuckDBStore,
    clock: FakeClock,
    events: list[DeadLetterEvent],
) -> None:
    """Recovery means the operation ran: the handler's row is in the database."""
    store.execute("CREATE TABLE replayed (uid VARCHAR PRIMARY KEY)")

    @registry.register("write")
    def write(payload: dict[str, Any]) -> None:
        store.execute("INSERT INTO replayed VALUES (?)", [payload["uid"]])

    letter = put(queue, "m-42", payload={"uid": "m-42"})
    assert queue.replay_due().selected == ()  # not due yet: nothing ran
    assert store.execute("SELECT uid FROM replayed") == []
    clock.advance(15)
    report = queue.replay_due()
    assert report.recovered == (letter.id,) and report.selected == (letter.id,)
    assert store.execute("SELECT uid FROM replayed") == [("m-42",)]
    recovered = queue.get(letter.id)
    assert recovered is not None and recovered.status is RECOVERED
    assert events == [DeadLetterRecovered(recovered)]


def test_a_failing_handler_leaves_the_letter_pending_with_its_error(
    queue: DeadLetterQueue, registry: ReplayRegistry, clock: FakeClock
) -> None:
    """A handler's exception spends an attempt and is recorded, redacted, for the next try."""

    @registry.register("write")
    def refuse(payload: dict[str, Any]) -> None:
        raise PermissionError("denied: password=s3cret")

    letter = put(queue)
    clock.advance(15)
    assert queue.replay_due().failed == (letter.id,)
    after = queue.get(letter.id)
    assert after is not None and after.status is PENDING and after.attempts == 2
    assert after.error_class == "PermissionError"
    assert after.message.startswith("denied: password=") and "s3cret" not in after.message
    assert "refuse" in after.stack and "s3cret" not in after.stack
    assert after.last_failed_at == EPOCH + timedelta(seconds=15)
    assert after.next_attempt_at == after.last_failed_at + timedelta(seconds=30)


def test_an_unknown_operation_fails_with_a_clear_message(
    make_queue: Callable[..., DeadLetterQueue], clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """A letter without a handler is never marked recovered: it fails, then dies."""
    queue = make_queue(max_attempts=2)
    letter = put(queue, operation="vanished")
    clock.advance(15)
    assert queue.replay_due().dead == (letter.id,)
    dead = queue.get(letter.id)
    assert dead is not None and dead.error_class.endswith("UnknownOperationError")
    assert dead.message == (
        "no replay handler is registered for operation 'vanished' (registered: write)"
    )


def test_unhealthy_components_are_skipped_without_spending_an_attempt(
    queue: DeadLetterQueue, clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """Letters of a component that is down wait (deferred), attempts unchanged; others run."""
    down = [put(queue, f"pg{i}", component="postgresql") for i in range(2)]
    up = put(queue, "llm", component="ollama")
    asked: list[str] = []

    def healthy(component: str) -> bool:
        asked.append(component)
        return component != "postgresql"

    clock.advance(15)
    report = queue.replay_due(is_healthy=healthy)
    assert set(report.skipped) == {d.id for d in down} and report.recovered == (up.id,)
    assert calls == [{"uid": "llm"}]
    assert sorted(asked) == ["ollama", "postgresql"]  # asked once per component per pass
    for letter in down:
        after = queue.get(letter.id)
        assert after is not None and after.status is PENDING and after.attempts == 1
        assert after.next_attempt_at > EPOCH + timedelta(seconds=15)  # pushed back a little


def test_a_health_check_that_raises_counts_as_unhealthy(
    queue: DeadLetterQueue, clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """A broken health check skips the letter instead of breaking the pass."""
    letter = put(queue)

    def broken(component: str) -> bool:
        raise RuntimeError("probe crashed")

    clock.advance(15)
    assert queue.replay_due(is_healthy=broken).skipped == (letter.id,)
    assert calls == []


def test_dry_run_runs_nothing(
    queue: DeadLetterQueue, calls: list[dict[str, Any]], events: list[DeadLetterEvent]
) -> None:
    """A dry run names the letters that would run and changes nothing."""
    ids = [put(queue, f"k{i}").id for i in range(3)]
    before = queue.list()
    report = queue.replay(dry_run=True)
    assert report.dry_run and set(report.selected) == set(ids)
    assert report.recovered == report.failed == report.dead == ()
    assert calls == [] and events == [] and queue.list() == before


def test_manual_replay_is_rate_limited_on_the_clock(
    queue: DeadLetterQueue, clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """rate_per_s=2 waits half a second between replays, on the injected clock."""
    ids = [put(queue, f"k{i}").id for i in range(3)]
    report = queue.replay(rate_per_s=2)  # not due yet: manual replay runs them anyway
    assert set(report.recovered) == set(ids)
    assert clock.sleeps == [0.5, 0.5]
    assert len(calls) == 3


def test_manual_replay_by_id_revives_a_dead_letter(
    make_queue: Callable[..., DeadLetterQueue], registry: ReplayRegistry, clock: FakeClock
) -> None:
    """A DEAD letter replayed by hand after the fix is RECOVERED; unknown ids are skipped."""
    fixed = False

    @registry.register("write")
    def write(payload: dict[str, Any]) -> None:
        if not fixed:
            raise ConnectionError("down")

    queue = make_queue(max_attempts=2)
    letter = put(queue)
    clock.advance(15)
    assert queue.replay_due().dead == (letter.id,)
    assert queue.replay(operation="write").selected == ()  # status defaults to PENDING
    fixed = True
    report = queue.replay([letter.id, "missing"])
    assert report.recovered == (letter.id,) and report.skipped == ("missing",)
    after = queue.get(letter.id)
    assert after is not None and after.status is RECOVERED
    assert queue.replay([letter.id]).skipped == (letter.id,)  # recovered: not again


def test_manual_replay_of_a_dead_letter_that_fails_again_stays_dead(
    make_queue: Callable[..., DeadLetterQueue],
    registry: ReplayRegistry,
    clock: FakeClock,
    events: list[DeadLetterEvent],
) -> None:
    """Replaying a DEAD letter that fails again returns it to DEAD, one more attempt counted."""
    registry.register("write", raising(ConnectionError("down")))
    queue = make_queue(max_attempts=2)
    letter = put(queue)
    clock.advance(15)
    queue.replay_due()
    report = queue.replay(status=None)
    assert report.dead == (letter.id,)
    after = queue.get(letter.id)
    assert after is not None and after.status is DEAD and after.attempts == 3
    assert [type(e) for e in events] == [DeadLetterDead, DeadLetterDead]


def test_purge_by_status_and_age(
    make_queue: Callable[..., DeadLetterQueue], registry: ReplayRegistry, clock: FakeClock
) -> None:
    """Purge deletes letters of one status last changed before a time or an age."""
    registry.register("write", raising(ConnectionError("down")))
    queue = make_queue(max_attempts=1)
    old = put(queue, "old")
    queue.replay([old.id])  # dead at t=0
    clock.advance(100)
    young = put(queue, "young")
    queue.replay([young.id])  # dead at t=100
    pending = put(queue, "pending")
    assert queue.purge(DEAD, older_than=EPOCH + timedelta(seconds=50)) == 1
    assert queue.get(old.id) is None and queue.get(young.id) is not None
    assert queue.purge(older_than=timedelta(seconds=10)) == 0  # young is only 0 s old
    assert queue.purge() == 1
    assert queue.purge(PENDING, older_than=timedelta(0)) == 0
    assert [d.id for d in queue.list()] == [pending.id]


def test_requeue_stale_returns_letters_a_crashed_worker_left(
    queue: DeadLetterQueue, letters: DuckDBDeadLetterStore, clock: FakeClock
) -> None:
    """REPLAYING letters claimed before the cut-off go back to PENDING, attempts unspent."""
    letter = put(queue)
    clock.advance(15)
    claimed_at = EPOCH + timedelta(seconds=15)
    assert [d.id for d in letters.claim_due(claimed_at, 10)] == [letter.id]  # then the worker dies
    assert queue.requeue_stale() == 0  # claimed this very instant: not older
    clock.advance(1)
    assert queue.requeue_stale(timedelta(seconds=5)) == 0  # still within its lease
    assert queue.requeue_stale() == 1
    after = queue.get(letter.id)
    assert after is not None and after.status is PENDING and after.attempts == 1
    assert after.claimed_at is None


def test_sync_replay_runs_async_handlers(
    queue: DeadLetterQueue, registry: ReplayRegistry, clock: FakeClock
) -> None:
    """From sync code an async handler runs to completion in its own event loop."""
    done: list[str] = []

    @registry.register("write")
    async def write(payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        done.append(payload["uid"])

    letter = put(queue)
    clock.advance(15)
    assert queue.replay_due().recovered == (letter.id,)
    assert done == ["k1"]


async def test_areplay_due_awaits_async_handlers_and_threads_sync_ones(
    queue: DeadLetterQueue, registry: ReplayRegistry, clock: FakeClock
) -> None:
    """Inside an event loop, async handlers are awaited on it and sync ones also run."""
    done: list[str] = []
    loop = asyncio.get_running_loop()

    @registry.register("async-write")
    async def async_write(payload: dict[str, Any]) -> None:
        assert asyncio.get_running_loop() is loop  # on the caller's loop, not a new one
        done.append(payload["uid"])

    registry.register("sync-write", lambda payload: done.append(payload["uid"]))
    put(queue, "a", operation="async-write")
    put(queue, "s", operation="sync-write")
    failing = put(queue, "x", operation="unknown")
    clock.advance(15)
    report = await queue.areplay_due()
    assert sorted(done) == ["a", "s"] and len(report.recovered) == 2
    assert report.failed == (failing.id,)


async def test_areplay_is_rate_limited_and_runs_by_hand(
    queue: DeadLetterQueue, clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """The async manual replay runs the selected letters, waiting on the clock between them."""
    ids = [put(queue, f"k{i}").id for i in range(3)]
    assert (await queue.areplay(dry_run=True)).selected
    assert calls == []
    report = await queue.areplay(ids, rate_per_s=4)
    assert report.recovered == tuple(ids) and clock.sleeps == [0.25, 0.25]


async def test_sync_replay_inside_an_event_loop_refuses_async_handlers(
    queue: DeadLetterQueue, registry: ReplayRegistry, clock: FakeClock
) -> None:
    """Calling the sync API from a coroutine is a caller mistake: loud, and no attempt spent."""

    @registry.register("write")
    async def write(payload: dict[str, Any]) -> None:
        return None

    letter = put(queue)
    clock.advance(15)
    with pytest.raises(RuntimeError, match="use areplay_due"):
        queue.replay_due()
    after = queue.get(letter.id)
    assert after is not None and after.status is PENDING and after.attempts == 1


def test_an_interrupted_pass_puts_unfinished_letters_back(
    queue: DeadLetterQueue, registry: ReplayRegistry, clock: FakeClock
) -> None:
    """KeyboardInterrupt mid-pass: claimed letters return to PENDING, no attempt spent."""

    @registry.register("write")
    def interrupted(payload: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    ids = {put(queue, f"k{i}").id for i in range(2)}
    clock.advance(15)
    with pytest.raises(KeyboardInterrupt):
        queue.replay_due()
    for letter_id in ids:
        after = queue.get(letter_id)
        assert after is not None and after.status is PENDING and after.attempts == 1


def test_listener_exceptions_are_swallowed(
    make_queue: Callable[..., DeadLetterQueue], clock: FakeClock, calls: list[dict[str, Any]]
) -> None:
    """A broken listener neither breaks the replay nor keeps the event from later listeners."""
    received: list[DeadLetterEvent] = []

    def broken(event: DeadLetterEvent) -> None:
        raise RuntimeError("alert manager down")

    queue = make_queue(listeners=[broken, received.append])
    letter = put(queue)
    clock.advance(15)
    assert queue.replay_due().recovered == (letter.id,)
    assert [type(e) for e in received] == [DeadLetterRecovered]


def test_registry_registers_by_call_or_decorator_and_refuses_duplicates() -> None:
    """Names are unique unless replaced; an unknown name is a clear error listing the known."""
    registry = ReplayRegistry()

    @registry.register("b")
    def b(payload: dict[str, Any]) -> None:
        return None

    def a(payload: dict[str, Any]) -> None:
        return None

    assert registry.register("a", a) is a
    assert registry.names() == ("a", "b") and "a" in registry and registry.get("b") is b
    with pytest.raises(ValueError, match="already has a replay handler"):
        registry.register("a", b)
    registry.register("a", b, replace=True)
    assert registry.get("a") is b
    with pytest.raises(UnknownOperationError, match=r"'c' \(registered: a, b\)"):
        registry.get("c")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="no-attempts"),
        pytest.param({"base_delay_s": -1}, "base_delay_s", id="negative-base"),
        pytest.param({"base_delay_s": 10, "max_delay_s": 5}, "max_delay_s", id="cap-below-base"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    make_queue: Callable[..., DeadLetterQueue], options: dict[str, Any], field: str
) -> None:
    """A queue with a setting that cannot work is not built."""
    with pytest.raises(ValueError, match=field):
        make_queue(**options)


def test_naive_wall_clock_and_bad_rate_are_refused(
    letters: DuckDBDeadLetterStore, registry: ReplayRegistry, queue: DeadLetterQueue
) -> None:
    """Timestamps must be aware; a rate must be positive."""
    naive = DeadLetterQueue(letters, registry, wall_clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        put(naive)
    with pytest.raises(ValueError, match="rate_per_s"):
        queue.replay(rate_per_s=0)


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(biomem.resilience.deadletter, id="deadletter"),
        pytest.param(biomem.resilience._dlq_sql, id="_dlq_sql"),
    ],
)
def test_the_queue_imports_nothing_from_biomem_outside_resilience(module: Any) -> None:
    """biomem.resilience stands alone: the stores reach biomem only through Protocols."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [
        a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    ]
    biomem = [name for name in imported if name.split(".")[0] == "biomem"]
    assert all(name.startswith("biomem.resilience") for name in biomem), biomem
