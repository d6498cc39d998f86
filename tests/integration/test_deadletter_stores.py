"""Dead-letter stores against real databases: one contract for DuckDB and PostgreSQL,
concurrent claims with SKIP LOCKED, and puts that survive SIGKILL whole or not at all."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from biomem.resilience.clock import FakeClock
from biomem.resilience.deadletter import (
    DeadLetter,
    DeadLetterDead,
    DeadLetterEvent,
    DeadLetterQueue,
    DeadLetterStatus,
    DeadLetterStore,
    DuckDBDeadLetterStore,
    PostgresDeadLetterStore,
    ReplayRegistry,
    TieredDeadLetterStore,
)
from biomem.store import DuckDBStore
from tests.conftest import cli_env

pytestmark = pytest.mark.integration

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PENDING, REPLAYING = DeadLetterStatus.PENDING, DeadLetterStatus.REPLAYING
RECOVERED, DEAD = DeadLetterStatus.RECOVERED, DeadLetterStatus.DEAD


def letter(n: int, *, key: str | None = None, due_s: float = 0, **fields: Any) -> DeadLetter:
    """Letter number ``n``, first failed at EPOCH, due ``due_s`` seconds later."""
    values: dict[str, Any] = {
        "id": f"letter-{n:04d}",
        "operation": "write",
        "payload": {"uid": f"m-{n}", "nested": {"tags": ["a", "b"], "score": 0.5}},
        "idempotency_key": key or f"key-{n}",
        "error_class": "ConnectionError",
        "message": "connection refused",
        "stack": "Traceback (most recent call last): ...",
        "attempts": 1,
        "first_failed_at": EPOCH,
        "last_failed_at": EPOCH,
        "next_attempt_at": EPOCH + timedelta(seconds=due_s),
        "status": PENDING,
        "component": "postgresql",
        "updated_at": EPOCH,
    }
    values.update(fields)
    return DeadLetter(**values)


@contextmanager
def pg_schema(url: str) -> Iterator[PostgresDeadLetterStore]:
    """A store in a schema of its own, dropped afterwards (pg_clean_url resets only public)."""
    schema = f"dlq_{secrets.token_hex(4)}"
    store = PostgresDeadLetterStore(lambda: psycopg.connect(url), schema=schema)
    store.ensure_schema()
    try:
        yield store
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["duckdb", "postgresql", "tiered"])
def letters(request: pytest.FixtureRequest) -> Iterator[DeadLetterStore]:
    """The same contract on both engines, and on PostgreSQL with its DuckDB spill."""
    if request.param == "duckdb":
        duck = DuckDBDeadLetterStore(request.getfixturevalue("store"))
        duck.ensure_schema()
        duck.ensure_schema()  # idempotent
        yield duck
        return
    with pg_schema(request.getfixturevalue("pg_clean_url")) as pg:
        pg.ensure_schema()
        if request.param == "tiered":
            tiered = TieredDeadLetterStore(
                pg, DuckDBDeadLetterStore(request.getfixturevalue("store"))
            )
            tiered.ensure_schema()
            yield tiered
        else:
            yield pg


@pytest.fixture
def pg_url(pg_clean_url: str) -> str:
    return pg_clean_url


# -- the contract, on both engines ---------------------------------------------------------


def test_letters_round_trip_unchanged(letters: DeadLetterStore) -> None:
    """What is put is what get and list return, times in UTC, payload as JSON."""
    stored = letters.put(letter(1))
    assert stored == letter(1)
    assert letters.get("letter-0001") == letter(1)
    assert letters.get("missing") is None
    letters.put(letter(2, operation="embed", first_failed_at=EPOCH + timedelta(seconds=1)))
    assert [d.id for d in letters.list()] == ["letter-0001", "letter-0002"]
    assert [d.id for d in letters.list(operation="embed")] == ["letter-0002"]
    assert [d.id for d in letters.list(PENDING, limit=1)] == ["letter-0001"]
    assert letters.list(DEAD) == []
    assert letters.counts() == {PENDING: 2, REPLAYING: 0, RECOVERED: 0, DEAD: 0}
    assert letters.oldest_pending() == EPOCH


def test_list_filters_by_component_and_error_class_by_full_or_short_name(
    letters: DeadLetterStore,
) -> None:
    """list() keeps letters matching every filter; an error class matches by full or last name."""
    letters.put(letter(1, error_class="psycopg.OperationalError"))
    letters.put(letter(2, error_class="TimeoutError", component="ollama"))
    letters.put(letter(3, error_class="my_pkg.Op_Error", operation="embed"))
    letters.put(letter(4, error_class="xOperationalError"))

    def ids(**filters: Any) -> list[str]:
        return [d.id for d in letters.list(**filters)]

    assert ids(component="ollama") == ["letter-0002"]
    assert ids(error_class="OperationalError") == ["letter-0001"]  # not xOperationalError
    assert ids(error_class="psycopg.OperationalError") == ["letter-0001"]
    assert ids(error_class="Operational") == []  # a class name, not a substring
    assert ids(error_class="Op_Error") == ["letter-0003"]  # _ is no wildcard
    assert ids(error_class="Op%Error") == []
    assert ids(component="postgresql", operation="embed") == ["letter-0003"]
    assert ids(component="postgresql", error_class="TimeoutError") == []
    assert ids(status=DEAD, component="postgresql") == []


def test_one_open_letter_per_idempotency_key(letters: DeadLetterStore) -> None:
    """A put under an open letter's key updates it; once closed, the key is free again."""
    letters.put(letter(1, key="k"))
    later = EPOCH + timedelta(minutes=5)
    again = letters.put(
        letter(2, key="k", message="timeout", payload={"v": 2}, last_failed_at=later)
    )
    assert again.id == "letter-0001" and again.attempts == 1 and again.message == "timeout"
    assert again.payload == {"v": 2} and again.last_failed_at == later
    assert again.first_failed_at == EPOCH and again.status is PENDING
    assert letters.counts()[PENDING] == 1

    assert letters.claim_due(EPOCH, 10)[0].id == "letter-0001"
    assert letters.put(letter(3, key="k")).id == "letter-0001"  # replaying is open too
    assert letters.mark_recovered("letter-0001", EPOCH) is not None
    assert letters.put(letter(4, key="k")).id == "letter-0004"
    assert letters.counts() == {PENDING: 1, REPLAYING: 0, RECOVERED: 1, DEAD: 0}


def test_claims_follow_due_time_limit_and_status(letters: DeadLetterStore) -> None:
    """claim_due takes due PENDING letters oldest-due first; each is claimed once."""
    for n, due in enumerate([30, 10, 20, 99]):
        letters.put(letter(n, due_s=due))
    now = EPOCH + timedelta(seconds=30)
    first = letters.claim_due(now, 2)
    assert [d.id for d in first] == ["letter-0001", "letter-0002"]
    assert all(d.status is REPLAYING and d.claimed_at == now for d in first)
    assert [d.id for d in letters.claim_due(now, 10)] == ["letter-0000"]
    assert letters.claim_due(now, 10) == []
    assert letters.claim("letter-0000", now=now) is None  # already replaying
    assert letters.claim("letter-0003", now=now) is not None  # by hand: due or not
    assert letters.counts()[REPLAYING] == 4


def test_transitions_apply_only_to_replaying_letters(letters: DeadLetterStore) -> None:
    """Recovered, failed and released need a claimed letter; each records its time."""
    letters.put(letter(1))
    t = EPOCH + timedelta(seconds=5)
    assert letters.mark_recovered("letter-0001", t) is None  # not claimed
    letters.claim_due(EPOCH, 1)
    failed = letters.mark_failed(
        "letter-0001",
        error_class="TimeoutError",
        message="slow",
        stack="tb",
        attempts=2,
        next_attempt_at=t + timedelta(seconds=60),
        dead=False,
        now=t,
    )
    assert failed is not None and failed.status is PENDING and failed.attempts == 2
    assert (failed.error_class, failed.message, failed.stack) == ("TimeoutError", "slow", "tb")
    assert failed.last_failed_at == t and failed.updated_at == t and failed.claimed_at is None
    assert letters.release("letter-0001", next_attempt_at=t, now=t) is None  # not claimed

    assert letters.claim("letter-0001", now=t) is not None
    released = letters.release("letter-0001", next_attempt_at=t + timedelta(hours=1), now=t)
    assert released is not None and released.status is PENDING and released.attempts == 2

    letters.claim("letter-0001", now=t)
    dead = letters.mark_failed(
        "letter-0001",
        error_class="E",
        message="m",
        stack="s",
        attempts=3,
        next_attempt_at=t,
        dead=True,
        now=t,
    )
    assert dead is not None and dead.status is DEAD
    assert letters.claim_due(t + timedelta(days=1), 10) == []  # dead letters wait for a person
    assert letters.oldest_pending() is None

    letters.put(letter(2, key=dead.idempotency_key))  # a newer failure under the same key
    assert letters.claim("letter-0001", now=t) is None  # reviving it would open the key twice
    assert letters.mark_recovered("letter-0001", t) is None


def test_purge_and_requeue_stale(letters: DeadLetterStore) -> None:
    """Purge deletes by status and age; requeue_stale frees letters claimed before a cut-off."""
    for n in range(3):
        letters.put(letter(n))
    letters.claim_due(EPOCH, 2)  # letter-0000 and letter-0001, claimed at EPOCH
    assert letters.requeue_stale(EPOCH) == 0
    assert letters.requeue_stale(EPOCH + timedelta(seconds=1)) == 2
    assert letters.counts()[PENDING] == 3

    for n in range(3):
        letters.claim(f"letter-{n:04d}", now=EPOCH)
        letters.mark_recovered(f"letter-{n:04d}", EPOCH + timedelta(hours=n))
    assert letters.purge(RECOVERED, older_than=EPOCH + timedelta(minutes=90)) == 2
    assert letters.purge(DEAD) == 0
    assert letters.purge(RECOVERED) == 1
    assert letters.list() == []


def test_queue_replays_through_the_real_handler_until_dead(letters: DeadLetterStore) -> None:
    """The queue on either engine: a working handler recovers, a broken one ends DEAD."""
    clock = FakeClock()
    registry = ReplayRegistry()
    written: list[str] = []
    registry.register("write", lambda payload: written.append(payload["uid"]))

    @registry.register("broken")
    def broken(payload: dict[str, Any]) -> None:
        raise ConnectionError("down")

    events: list[DeadLetterEvent] = []
    queue = DeadLetterQueue(
        letters,
        registry,
        clock=clock,
        wall_clock=lambda: EPOCH + timedelta(seconds=clock.monotonic()),
        max_attempts=2,
        listeners=[events.append],
    )
    ok = queue.put(
        "write", {"uid": "m-1"}, ConnectionError("x"), idempotency_key="a", component="pg"
    )
    bad = queue.put("broken", {}, ConnectionError("x"), idempotency_key="b", component="pg")
    clock.advance(3600)
    report = queue.replay_due()
    assert report.recovered == (ok.id,) and report.dead == (bad.id,)
    assert written == ["m-1"]
    assert [type(e) for e in events if isinstance(e, DeadLetterDead)] == [DeadLetterDead]
    assert queue.counts() == {PENDING: 0, REPLAYING: 0, RECOVERED: 1, DEAD: 1}


# -- PostgreSQL: several workers -------------------------------------------------------------


@contextmanager
def borrowed(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Lend one long-lived connection to a store without closing it."""
    yield conn


def test_concurrent_workers_claim_disjoint_sets(pg_url: str) -> None:
    """Two threads, each on its own connection, claim 100 due letters: no overlap, none lost."""
    with pg_schema(pg_url) as setup:
        for n in range(100):
            setup.put(letter(n))
        barrier = threading.Barrier(2)
        claimed: list[list[str]] = [[], []]
        errors: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    own = PostgresDeadLetterStore(lambda: borrowed(conn), schema=setup.schema)
                    barrier.wait()
                    while batch := own.claim_due(EPOCH, 3):
                        claimed[slot].extend(d.id for d in batch)
            except Exception as exc:  # noqa: BLE001 - asserted on in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert set(claimed[0]).isdisjoint(claimed[1])
        assert sorted(claimed[0] + claimed[1]) == [f"letter-{n:04d}" for n in range(100)]
        assert setup.counts()[REPLAYING] == 100


def test_claim_skips_rows_locked_by_another_worker(pg_url: str) -> None:
    """A letter locked by an open transaction elsewhere is passed over, not waited for."""
    with pg_schema(pg_url) as store:
        for n in range(5):
            store.put(letter(n))
        with psycopg.connect(pg_url) as holder:
            table = sql.Identifier(store.schema, "dead_letters")
            holder.execute(
                sql.SQL("SELECT id FROM {} WHERE id = 'letter-0000' FOR UPDATE").format(table)
            )
            # Were it waiting instead of skipping, lock_timeout would fail the claim.
            impatient = PostgresDeadLetterStore(
                lambda: psycopg.connect(pg_url, options="-c lock_timeout=2000"),
                schema=store.schema,
            )
            got = impatient.claim_due(EPOCH, 10)
            assert [d.id for d in got] == [f"letter-{n:04d}" for n in range(1, 5)]
            holder.rollback()
        assert [d.id for d in store.claim_due(EPOCH, 10)] == ["letter-0000"]


def test_concurrent_puts_under_one_key_make_one_letter(pg_url: str) -> None:
    """The partial unique index arbitrates racing puts: one open letter counting every failure."""
    with pg_schema(pg_url) as store:
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                barrier.wait()
                for n in range(10):
                    store.put(letter(slot * 100 + n, key="same"))
            except Exception as exc:  # noqa: BLE001 - asserted on in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        only = store.list()
        assert len(only) == 1 and only[0].attempts == 1
        assert only[0].id in {
            f"letter-{slot * 100 + n:04d}" for slot in range(4) for n in range(10)
        }


def test_default_schema_is_biomem(pg_url: str) -> None:
    """Without a schema the table lives in biomem.dead_letters."""
    store = PostgresDeadLetterStore(lambda: psycopg.connect(pg_url))
    try:
        store.ensure_schema()
        # The test database is shared by the run: other tests' letters may be there too.
        stored = store.put(letter(9901, key="default-schema-only"))
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM biomem.dead_letters WHERE id = %s", [stored.id]
            ).fetchone()
        assert row == (1,)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS biomem CASCADE")


# -- DuckDB: SIGKILL durability ---------------------------------------------------------------

BLOB = 50_000

WRITER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path

from biomem.resilience.deadletter import DeadLetter, DeadLetterStatus, DuckDBDeadLetterStore
from biomem.store import DuckDBStore

path, count, blob = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store = DuckDBStore.open(path)
letters = DuckDBDeadLetterStore(store)
letters.ensure_schema()
now = datetime(2026, 1, 1, tzinfo=UTC)
n = 0
while count < 0 or n < count:
    letters.put(DeadLetter(
        id=f"letter-{n:06d}", operation="write", payload={"n": n, "blob": "x" * blob},
        idempotency_key=f"key-{n}", error_class="ConnectionError", message=f"failure {n}",
        stack="s" * 8000, attempts=1, first_failed_at=now, last_failed_at=now,
        next_attempt_at=now, status=DeadLetterStatus.PENDING, component="postgresql",
    ))
    print("written", f"letter-{n:06d}", flush=True)
    n += 1
time.sleep(600)
"""


def kill_after(path: Path, *, count: int, lines: int) -> list[str]:
    """Run the writer, SIGKILL it once it has reported ``lines`` puts; the ids it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(count), str(BLOB)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(120, proc.kill)  # never hang the suite
    timer.start()
    written: list[str] = []
    try:
        assert proc.stdout is not None
        while len(written) < lines:
            line = proc.stdout.readline()
            assert line, f"the writer ended early: {proc.stderr.read() if proc.stderr else ''}"
            if line.startswith("written "):  # log lines may share stdout
                written.append(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return written


def survivors(path: Path) -> list[DeadLetter]:
    """Reopen the file as biomem does (WAL replayed) and read every letter."""
    with DuckDBStore.open(path) as reopened:
        letters = DuckDBDeadLetterStore(reopened)
        found = letters.list(limit=1_000_000)
        (duplicates,) = reopened.execute("SELECT count(*) - count(DISTINCT id) FROM dead_letters")
    assert duplicates == (0,)
    return found


def assert_whole(found: DeadLetter) -> None:
    n = int(found.id.removeprefix("letter-"))
    expected = letter(n, key=f"key-{n}")
    assert found == replace(
        expected,
        id=found.id,
        payload={"n": n, "blob": "x" * BLOB},
        message=f"failure {n}",
        stack="s" * 8000,
    )


@pytest.mark.slow
def test_a_letter_put_before_sigkill_is_there_exactly_once(tmp_path: Path) -> None:
    """SIGKILL after put returned: the reopened store holds the letter once, whole."""
    path = tmp_path / "killed.duckdb"
    assert kill_after(path, count=1, lines=1) == ["letter-000000"]
    found = survivors(path)
    assert [d.id for d in found] == ["letter-000000"]
    assert_whole(found[0])


@pytest.mark.slow
@pytest.mark.parametrize("lines", [pytest.param(3, id="early"), pytest.param(25, id="later")])
def test_sigkill_during_puts_loses_no_returned_put_and_leaves_no_partial_letter(
    tmp_path: Path, lines: int
) -> None:
    """SIGKILL mid-loop: every reported put survives once; whatever else is there is whole."""
    path = tmp_path / "killed.duckdb"
    written = kill_after(path, count=-1, lines=lines)
    found = survivors(path)
    ids = [d.id for d in found]
    assert Counter(ids) == Counter(set(ids))
    assert set(written) <= set(ids)
    # Puts commit in order, so the survivors are a prefix: no gap where a put was torn.
    assert sorted(ids) == [f"letter-{n:06d}" for n in range(len(ids))]
    for survivor in found:
        assert_whole(survivor)


def test_duckdb_store_never_opens_the_file_itself(store: DuckDBStore) -> None:
    """The DuckDB letters live in the store's own file, through its one connection."""
    letters = DuckDBDeadLetterStore(store)
    letters.ensure_schema()
    letters.put(letter(1))
    assert store.execute("SELECT id FROM dead_letters") == [("letter-0001",)]


def test_claims_are_ordered_deterministically(letters: DeadLetterStore) -> None:
    """Letters due at the same time come back ordered by id."""
    for n in (3, 1, 2):
        letters.put(letter(n))
    claimed = letters.claim_due(EPOCH, 10)
    assert [d.id for d in claimed] == ["letter-0001", "letter-0002", "letter-0003"]
