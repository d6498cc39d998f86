"""Error events: classification into the taxonomy, bounded history, counters, redaction."""

from __future__ import annotations

import errno

import httpx
import psycopg
import pytest
from psycopg import errors as pg_errors

from biomem.resilience.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    LLMResponseError,
    LLMUnavailable,
)
from biomem.resilience.events import ErrorKind, ErrorLog, classify


def caused(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        pytest.param(
            caused(LLMUnavailable("ollama", "x"), httpx.ConnectError("refused")),
            ErrorKind.CONNECTION_FAILURE,
            id="connect",
        ),
        pytest.param(
            caused(LLMUnavailable("ollama", "x"), httpx.ReadTimeout("slow")),
            ErrorKind.TIMEOUT,
            id="read-timeout",
        ),
        pytest.param(LLMUnavailable("ollama", "x", status=429), ErrorKind.RATE_LIMITED, id="429"),
        pytest.param(
            LLMUnavailable("ollama", "x", status=503), ErrorKind.SERVICE_UNAVAILABLE, id="503"
        ),
        pytest.param(LLMResponseError("ollama", "bad"), ErrorKind.MALFORMED_RESPONSE, id="json"),
        pytest.param(
            caused(DatabaseUnavailable("postgresql", "x"), pg_errors.SerializationFailure()),
            ErrorKind.TRANSACTION_FAILURE,
            id="serialization",
        ),
        pytest.param(
            caused(DatabaseUnavailable("postgresql", "x"), psycopg.OperationalError("gone")),
            ErrorKind.CONNECTION_FAILURE,
            id="pg-operational",
        ),
        pytest.param(
            OSError(errno.ENOSPC, "No space left on device"),
            ErrorKind.RESOURCE_EXHAUSTION,
            id="disk-full",
        ),
        pytest.param(
            ConfigurationError("X", "y"), ErrorKind.CONFIGURATION_ERROR, id="configuration"
        ),
        pytest.param(
            caused(DatabaseUnavailable("postgresql", "x"), pg_errors.InvalidPassword()),
            ErrorKind.SECURITY_VIOLATION,
            id="auth",
        ),
    ],
)
def test_classification(exc: BaseException, kind: ErrorKind) -> None:
    """Each failure maps to its kind, looking through the cause chain."""
    assert classify(exc) is kind


def test_history_is_bounded_and_counters_are_not() -> None:
    """The ring buffer keeps the newest events; counters count every event."""
    log = ErrorLog(capacity=3)
    for i in range(5):
        log.record(TimeoutError(f"t{i}"), component="ollama", operation="chat")
    recent = log.recent()
    assert [e.message for e in recent] == ["t4", "t3", "t2"]
    assert log.counts() == {("ollama", ErrorKind.TIMEOUT): 5}
    assert len({e.id for e in recent}) == 3  # uuid4: unpredictable and unique


def test_events_are_redacted_and_listeners_cannot_break_recording() -> None:
    """Messages and context lose their secrets; a failing listener does not stop the record."""
    seen: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    log = ErrorLog(listeners=[broken, lambda e: seen.append(e.id)])
    event = log.record(
        ConnectionError("cannot reach postgresql://app:S3cret!@db/x\nforged line"),
        component="postgresql",
        operation="ingest",
        context={"password": "S3cret!", "batch": 3},
    )
    assert "S3cret!" not in repr(event.as_dict())
    assert "\n" not in event.message
    assert event.context["batch"] == 3
    assert seen == [event.id]
