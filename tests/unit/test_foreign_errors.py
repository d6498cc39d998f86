"""Every exception class of httpx, psycopg and psycopg_pool is classified at the boundary."""

from __future__ import annotations

import inspect
from types import ModuleType

import httpx
import psycopg
import psycopg_pool
import pytest
from psycopg import errors as pg_errors

from biomem.clients.ollama import classify_httpx_error
from biomem.clients.postgres import classify_psycopg_error
from biomem.resilience.errors import (
    DatabaseQueryError,
    DatabaseUnavailable,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailable,
)


def exception_classes(*modules: ModuleType, base: type[BaseException]) -> list[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in modules:
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, base):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__qualname__)


def instance(cls: type[BaseException]) -> BaseException:
    try:
        return cls("x")
    except TypeError:
        return cls.__new__(cls)


@pytest.mark.parametrize(
    "cls",
    exception_classes(httpx, base=Exception),
    ids=lambda cls: cls.__name__,
)
def test_every_httpx_exception_is_classified(cls: type[BaseException]) -> None:
    """httpx's exceptions all map to an Ollama error class; none escapes untranslated."""
    assert classify_httpx_error(instance(cls)) in (
        LLMUnavailable,
        LLMRequestError,
        LLMResponseError,
    )


def test_httpx_classification_is_most_specific_first() -> None:
    """Timeouts and dropped connections are transient; a bad scheme is permanent."""
    assert classify_httpx_error(httpx.ReadTimeout("x")) is LLMUnavailable
    assert classify_httpx_error(httpx.RemoteProtocolError("x")) is LLMUnavailable
    assert classify_httpx_error(httpx.UnsupportedProtocol("x")) is LLMRequestError
    assert classify_httpx_error(httpx.DecodingError("x")) is LLMResponseError
    assert classify_httpx_error(ValueError("x")) is None


# psycopg_pool's errors (PoolTimeout, PoolClosed, TooManyRequests) derive from psycopg.Error.
PG_CLASSES = exception_classes(psycopg, pg_errors, psycopg_pool, base=psycopg.Error)


@pytest.mark.parametrize("cls", PG_CLASSES, ids=lambda cls: cls.__qualname__)
def test_every_psycopg_exception_is_classified(cls: type[BaseException]) -> None:
    """psycopg's and the pool's exceptions all map to a database error class."""
    assert psycopg_pool.PoolTimeout in PG_CLASSES
    assert classify_psycopg_error(instance(cls)) in (DatabaseUnavailable, DatabaseQueryError)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        pytest.param(pg_errors.SerializationFailure, DatabaseUnavailable, id="serialization"),
        pytest.param(pg_errors.DeadlockDetected, DatabaseUnavailable, id="deadlock"),
        pytest.param(pg_errors.AdminShutdown, DatabaseUnavailable, id="admin-shutdown"),
        pytest.param(psycopg.OperationalError, DatabaseUnavailable, id="connection"),
        pytest.param(pg_errors.SyntaxError, DatabaseQueryError, id="syntax"),
        pytest.param(pg_errors.UniqueViolation, DatabaseQueryError, id="constraint"),
        pytest.param(pg_errors.UndefinedTable, DatabaseQueryError, id="no-table"),
    ],
)
def test_psycopg_transient_and_permanent(cls: type[BaseException], expected: type) -> None:
    """Connection loss, shutdown, serialization and deadlock are transient; bad SQL is not."""
    assert classify_psycopg_error(instance(cls)) is expected


def test_psycopg_has_what_the_client_deadlines_rest_on() -> None:
    """The PostgreSQL client's deadlines use psycopg's wait timeout and its error, and
    cancel_safe with a timeout: an install without them must fail here, not hang later."""
    import inspect

    assert "timeout" in inspect.signature(psycopg.Connection.wait).parameters
    assert issubclass(pg_errors._WaitTimeout, psycopg.OperationalError)
    assert classify_psycopg_error(pg_errors._WaitTimeout("x")) is DatabaseUnavailable
    assert "timeout" in inspect.signature(psycopg.Connection.cancel_safe).parameters
