"""The PostgreSQL policy against a real server: a terminated backend is retried, bad SQL is not."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from biomem.clients.postgres import PostgresClient
from biomem.config import load_settings
from biomem.guards import build_guards
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import DatabaseQueryError
from biomem.resilience.events import ErrorKind, ErrorLog
from biomem.resilience.policy import Policy

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
