"""The PostgreSQL policy against a real server: a terminated backend is retried, bad SQL is not,
and a partitioned server (a fault proxy that blackholes) fails calls at the client's deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pydantic import SecretStr

from biomem.clients.postgres import PostgresClient
from biomem.config import load_settings
from biomem.guards import build_guards
from biomem.resilience.bulkhead import BulkheadFullError
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import DatabaseQueryError, DatabaseUnavailable
from biomem.resilience.events import ErrorKind, ErrorLog
from biomem.resilience.policy import Policy
from tests.fakes.proxy import FaultProxy

pytestmark = pytest.mark.integration


def policy(errors: ErrorLog) -> Policy:
    """The product's postgresql policy, on a fake clock, recording into ``errors``."""
    guard = build_guards(load_settings(), clock=FakeClock()).postgresql
    guard.errors = errors
    return guard


def test_terminated_backend_is_retried(pg_clean_url: str) -> None:
    """pg_terminate_backend mid-statement is classified transient and the retry succeeds."""
    errors = ErrorLog()
    attempts: list[int] = []
    started = threading.Event()

    def work(conn: psycopg.Connection[Any]) -> int:
        attempts.append(conn.info.backend_pid)
        if len(attempts) == 1:
            started.set()
            conn.execute("SELECT pg_sleep(30)")
        row = conn.execute("SELECT 42").fetchone()
        assert row is not None
        return int(row[0])

    def terminate() -> None:
        started.wait(10)
        time.sleep(0.2)  # let the sleep start on the server
        with psycopg.connect(pg_clean_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [attempts[0]])

    killer = threading.Thread(target=terminate)
    killer.start()
    with PostgresClient(SecretStr(pg_clean_url), policy=policy(errors)) as client:
        assert client.run(work, operation="test") == 42
    killer.join(10)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    kinds = {event.kind for event in errors.recent()}
    assert kinds & {ErrorKind.SERVICE_UNAVAILABLE, ErrorKind.CONNECTION_FAILURE}


def test_bad_sql_is_not_retried(pg_clean_url: str) -> None:
    """A syntax error is permanent: one attempt, DatabaseQueryError, breaker untouched."""
    errors = ErrorLog()
    calls = 0

    def bad(conn: psycopg.Connection[Any]) -> None:
        nonlocal calls
        calls += 1
        conn.execute("SELEC 1")

    guard = policy(errors)
    with (
        PostgresClient(SecretStr(pg_clean_url), policy=guard) as client,
        pytest.raises(DatabaseQueryError, match="SyntaxError"),
    ):
        client.run(bad, operation="test")
    assert calls == 1
    assert guard.breaker.metrics().failed_calls == 0


# ---------------------------------------------------------------- client-side deadlines

# How long a test lets a call run before calling it hung: far above the deadlines
# below (a few seconds), far below a partition's "forever".
HUNG_S = 60.0


@pytest.fixture
def partitionable(pg_clean_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the test database, and the URL through it."""
    parts = urlsplit(pg_clean_url)
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as proxy:
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        yield proxy, urlunsplit(parts._replace(netloc=netloc))


def short_deadlines(url: str, **knobs: Any) -> PostgresClient:
    """A client whose every wait for the server ends within a few seconds."""
    settings: dict[str, Any] = {
        "connect_timeout_s": 1.0,
        "acquire_timeout_s": 1.0,
        "statement_timeout_s": 1.0,
        "call_timeout_s": 2.0,
        **knobs,
    }
    return PostgresClient(SecretStr(url), **settings)


def finishes(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised, None if it returned; fails if it hangs."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HUNG_S)
    assert not worker.is_alive(), f"the call still waits after {HUNG_S:g} s: no deadline"
    return outcome[0]


def test_a_statement_into_a_partition_fails_at_the_deadline(
    partitionable: tuple[FaultProxy, str],
) -> None:
    """A statement whose answer never comes (blackhole) fails with DatabaseUnavailable at the
    client's deadline, the connection is dropped, and after the heal a new one serves."""
    proxy, url = partitionable
    pids: list[int] = []

    def backend_pid(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    with short_deadlines(url) as client:

        def partitioned_mid_transaction() -> None:
            with client.connection() as conn:
                pids.append(backend_pid(conn))
                proxy.blackhole()
                conn.execute("SELECT 2")

        error = finishes(partitioned_mid_transaction)
        assert isinstance(error, DatabaseUnavailable), error
        assert error.transient and "no answer from the server within 2 s" in str(error)
        assert isinstance(error.__cause__, psycopg.OperationalError)
        proxy.heal()
        # A new connection (the abandoned one was closed, not handed out again).
        assert client.run(backend_pid, operation="t") != pids[0]


def test_borrowing_and_connecting_into_a_partition_fail_within_their_deadlines(
    partitionable: tuple[FaultProxy, str],
) -> None:
    """With an idle pooled connection and the network partitioned, the pool's check and the
    new connection after it both give up on their own (no answer to either): the caller gets
    DatabaseUnavailable instead of waiting for the partition to end."""
    proxy, url = partitionable
    with short_deadlines(url) as client:
        client.run(lambda conn: conn.execute("SELECT 1").fetchone(), operation="warm")
        assert client.get_stats().get("pool_available", 0) == 1
        proxy.blackhole()
        error = finishes(
            lambda: client.run(lambda conn: conn.execute("SELECT 1"), operation="t", retry=False)
        )
        assert isinstance(error, DatabaseUnavailable), error
        proxy.heal()


def test_the_policy_bulkhead_bounds_calls_to_the_pool_size(pg_clean_url: str) -> None:
    """The postgresql policy admits as many calls as the pool has connections; one more is
    refused with BulkheadFullError after the acquire wait, and the breaker never hears of it."""
    guard = build_guards(load_settings(), clock=FakeClock()).postgresql
    assert guard.bulkhead is not None
    slots = guard.bulkhead.max_concurrent
    with PostgresClient(SecretStr(pg_clean_url), max_size=slots, policy=guard) as client:
        with ExitStack() as held:
            for _ in range(slots):
                held.enter_context(client.connection())
            with pytest.raises(BulkheadFullError), client.connection():
                pass
        assert guard.breaker.metrics().failed_calls == 0
        assert client.run(lambda conn: conn.execute("SELECT 1").fetchone(), operation="t") == (1,)
