"""Error events: every failure at a dependency boundary, classified and kept (bounded).

An :class:`ErrorEvent` has an unpredictable id (uuid4), the component and
operation it happened in, a classification from the taxonomy below, and a
redacted context. :class:`ErrorLog` keeps the last N events in a ring buffer
and counts them by kind and component for health checks and metrics.

Taxonomy (:class:`ErrorKind`): connection_failure, timeout, rate_limited,
malformed_response, transaction_failure, resource_exhaustion,
service_unavailable, data_corruption, configuration_error, security_violation.
"""

from __future__ import annotations

import errno
import logging
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from biomem.resilience.redact import redact_text, redact_value

__all__ = ["ErrorEvent", "ErrorEventListener", "ErrorKind", "ErrorLog", "classify"]

# The standard library's logger: biomem routes it through its structlog pipeline,
# and biomem.resilience imports nothing else from biomem.
logger = logging.getLogger(__name__)


class ErrorKind(StrEnum):
    """What kind of failure an error is, whatever library raised it."""

    CONNECTION_FAILURE = "connection_failure"  # refused, reset, DNS, dropped mid-response
    TIMEOUT = "timeout"  # no answer in time (connect, read, statement)
    RATE_LIMITED = "rate_limited"  # HTTP 429, too many connections
    MALFORMED_RESPONSE = "malformed_response"  # an answer we cannot read
    TRANSACTION_FAILURE = "transaction_failure"  # serialization, deadlock, write conflict
    RESOURCE_EXHAUSTION = "resource_exhaustion"  # out of memory, disk full, pool exhausted
    SERVICE_UNAVAILABLE = "service_unavailable"  # 5xx, shutting down, breaker open
    DATA_CORRUPTION = "data_corruption"  # a store that cannot be read as written
    CONFIGURATION_ERROR = "configuration_error"  # bad settings, missing model or table
    SECURITY_VIOLATION = "security_violation"  # authentication or permission refused


# Matched against the names of the exception and its causes (most specific first),
# so that the taxonomy needs no import of the libraries that raise them.
_BY_NAME: tuple[tuple[tuple[str, ...], ErrorKind], ...] = (
    (("CircuitOpenError",), ErrorKind.SERVICE_UNAVAILABLE),
    (("ConfigurationError",), ErrorKind.CONFIGURATION_ERROR),
    (("LLMResponseError", "JSONDecodeError", "DecodingError"), ErrorKind.MALFORMED_RESPONSE),
    (
        ("SerializationFailure", "DeadlockDetected", "TransactionException", "LockNotAvailable"),
        ErrorKind.TRANSACTION_FAILURE,
    ),
    (("QueryCanceled", "TimeoutException", "PoolTimeout", "TimeoutError"), ErrorKind.TIMEOUT),
    (("TooManyConnections", "TooManyRequests"), ErrorKind.RATE_LIMITED),
    (
        ("OutOfMemoryException", "MemoryError", "DiskFull", "InsufficientResources"),
        ErrorKind.RESOURCE_EXHAUSTION,
    ),
    (
        ("InvalidPassword", "InvalidAuthorizationSpecification", "InsufficientPrivilege"),
        ErrorKind.SECURITY_VIOLATION,
    ),
    (("AdminShutdown", "CannotConnectNow", "CrashShutdown"), ErrorKind.SERVICE_UNAVAILABLE),
    (("SerializationException", "DataCorrupted"), ErrorKind.DATA_CORRUPTION),
    (
        ("ConnectError", "ConnectionError", "RemoteProtocolError", "ReadError", "WriteError"),
        ErrorKind.CONNECTION_FAILURE,
    ),
    (("OperationalError", "ConnectionException"), ErrorKind.CONNECTION_FAILURE),
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> ErrorKind:
    """Classify an exception (looking through its causes) into the taxonomy."""
    chain = _chain(exc)
    for item in chain:
        status = getattr(item, "status", None)
        if status == 429:
            return ErrorKind.RATE_LIMITED
        if status in (401, 403):
            return ErrorKind.SECURITY_VIOLATION
        if isinstance(status, int) and status >= 500:
            return ErrorKind.SERVICE_UNAVAILABLE
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            return ErrorKind.RESOURCE_EXHAUSTION
    names = [{cls.__name__ for cls in type(item).__mro__} for item in chain]
    for candidates, kind in _BY_NAME:
        if any(name in item_names for item_names in names for name in candidates):
            return kind
    text = " ".join(str(item) for item in chain).lower()
    if "timed out" in text or "timeout" in text:
        return ErrorKind.TIMEOUT
    if "no space left" in text or "disk full" in text:
        return ErrorKind.RESOURCE_EXHAUSTION
    if "malformed" in text:
        return ErrorKind.MALFORMED_RESPONSE
    return ErrorKind.SERVICE_UNAVAILABLE


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent:
    """One failure at a boundary; ``context`` is redacted, ``message`` one line."""

    id: str
    at: datetime
    component: str
    operation: str
    kind: ErrorKind
    error_type: str
    message: str
    context: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "component": self.component,
            "operation": self.operation,
            "kind": self.kind.value,
            "error_type": self.error_type,
            "message": self.message,
            "context": dict(self.context),
        }


class ErrorEventListener(Protocol):
    def __call__(self, event: ErrorEvent) -> None: ...


class ErrorLog:
    """The recent error events (a ring buffer) and counters by kind and component.

    Args:
        capacity: how many events are kept; older ones are dropped, counters are not.
        wall_clock: the time stamped on events (people read it).
    """

    def __init__(
        self,
        *,
        capacity: int = 1000,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        listeners: Iterable[ErrorEventListener] = (),
    ) -> None:
        self._events: deque[ErrorEvent] = deque(maxlen=capacity)
        self._by_kind: Counter[tuple[str, ErrorKind]] = Counter()
        self._lock = threading.Lock()
        self._wall_clock = wall_clock
        self._listeners = list(listeners)

    def add_listener(self, listener: ErrorEventListener) -> None:
        self._listeners.append(listener)

    def record(
        self,
        exc: BaseException,
        *,
        component: str,
        operation: str,
        context: Mapping[str, Any] | None = None,
    ) -> ErrorEvent:
        """Classify, redact and keep one failure; tell the listeners."""
        kind = classify(exc)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        event = ErrorEvent(
            id=str(uuid.uuid4()),
            at=self._wall_clock(),
            component=component,
            operation=operation,
            kind=kind,
            error_type=type(exc).__name__,
            message=redact_text(first_line)[:500],
            context=redact_value("context", dict(context or {})),
        )
        with self._lock:
            self._events.append(event)
            self._by_kind[(component, kind)] += 1
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener must never break the failing call's path
                logger.exception("error event listener failed")
        return event

    def recent(self, *, component: str | None = None, limit: int = 50) -> list[ErrorEvent]:
        """The newest events first, optionally for one component."""
        with self._lock:
            events = list(self._events)
        chosen = [e for e in reversed(events) if component is None or e.component == component]
        return chosen[:limit]

    def counts(self) -> dict[tuple[str, ErrorKind], int]:
        """Events ever recorded, by (component, kind)."""
        with self._lock:
            return dict(self._by_kind)
