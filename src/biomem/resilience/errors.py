"""The one exception tree of biomem.

::

    BiomemError                      root: everything biomem raises on purpose
    ├── ConfigurationError           a setting is invalid (variable, accepts)
    ├── InputError                   a request or record is invalid (never retried)
    └── DependencyError              an external dependency failed (dependency)
        ├── DatabaseUnavailable      PostgreSQL or DuckDB cannot serve the call
        │   └── StoreLockedError     the DuckDB file is held by another process
        ├── DatabaseQueryError       the database rejected the statement (permanent)
        ├── LLMUnavailable           Ollama cannot serve the call (status, retry_after)
        ├── LLMRequestError          Ollama refused the request itself: 4xx (permanent)
        ├── LLMResponseError         Ollama's answer could not be read (malformed)
        ├── RetryExhaustedError      every allowed attempt failed (attempts, last_error)
        └── CircuitOpenError         a circuit breaker refused the call untried (name, retry_after)

Errors carry the context a handler needs as attributes; their ``str()``
is one line fit for a person and never contains a secret.
"""

from __future__ import annotations

__all__ = [
    "BiomemError",
    "CircuitOpenError",
    "ConfigurationError",
    "DatabaseQueryError",
    "DatabaseUnavailable",
    "DependencyError",
    "InputError",
    "LLMRequestError",
    "LLMResponseError",
    "LLMUnavailable",
    "RetryExhaustedError",
    "StoreLockedError",
]


class BiomemError(Exception):
    """Root of every error biomem raises on purpose."""


class ConfigurationError(BiomemError):
    """A setting is invalid.

    Attributes:
        variable: the environment variable or ``file:[section].key`` at fault.
        accepts: what the setting accepts, in words.
    """

    def __init__(self, variable: str, accepts: str, *, detail: str = "") -> None:
        self.variable = variable
        self.accepts = accepts
        self.detail = detail
        text = (
            f"{variable}: {detail}; accepts {accepts}"
            if detail
            else f"{variable} accepts {accepts}"
        )
        super().__init__(text)


class InputError(BiomemError):
    """A request or a record is invalid; retrying cannot help."""


class DependencyError(BiomemError):
    """An external dependency failed.

    Attributes:
        dependency: the dependency's name (``postgresql``, ``duckdb``, ``ollama``).
        transient: whether a later attempt may succeed.
    """

    transient: bool = True

    def __init__(self, dependency: str, message: str) -> None:
        self.dependency = dependency
        super().__init__(f"{dependency}: {message}")


class DatabaseUnavailable(DependencyError):
    """PostgreSQL or DuckDB cannot serve the call now."""


class StoreLockedError(DatabaseUnavailable):
    """The DuckDB file is locked by another process.

    Attributes:
        path: the store file.
        holder_pid: the PID of the process holding the lock, when known.
        holder: a short description of the holder (its command line), when known.
    """

    def __init__(self, path: str, *, holder_pid: int | None, holder: str | None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        self.holder = holder
        who = "another process"
        if holder_pid is not None:
            who = f"process {holder_pid}" + (f" ({holder})" if holder else "")
        super().__init__(
            "duckdb",
            f"the store {path} is in use by {who}; stop it or point DUCKDB_PATH at another file",
        )


class DatabaseQueryError(DependencyError):
    """The database rejected the statement itself: retrying cannot help."""

    transient = False


class LLMUnavailable(DependencyError):
    """Ollama cannot serve the call now.

    Attributes:
        status: the HTTP status when Ollama answered (429, 5xx), else None.
        retry_after: seconds Ollama asked us to wait (Retry-After), else None.
    """

    def __init__(
        self,
        dependency: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(dependency, message)
        self.status = status
        self.retry_after = retry_after


class LLMRequestError(DependencyError):
    """Ollama refused the request itself (400, 404 model not found, 422): do not retry."""

    transient = False

    def __init__(self, dependency: str, message: str, *, status: int) -> None:
        super().__init__(dependency, message)
        self.status = status


class LLMResponseError(DependencyError):
    """Ollama answered, but not with a document we can read (malformed JSON, wrong shape)."""


class RetryExhaustedError(DependencyError):
    """Every attempt the retry policy allowed failed; the last failure is the ``__cause__``.

    Only the last error's type is named in the message: its text may carry a
    connection string or a payload. ``transient`` stays True (the dependency
    may recover for a later run), but the default retry predicate never
    retries this error, so nested retriers do not multiply attempts.

    Attributes:
        attempts: how many attempts were made, the first included.
        last_error: the exception the last attempt raised, when known.
    """

    def __init__(
        self,
        dependency: str,
        *,
        attempts: int,
        last_error: BaseException | None = None,
    ) -> None:
        self.attempts = attempts
        self.last_error = last_error
        what = f" (last: {type(last_error).__name__})" if last_error is not None else ""
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(dependency, f"gave up after {attempts} {plural}{what}")


class CircuitOpenError(DependencyError):
    """A circuit breaker refused the call without trying it.

    Raised at once, never after waiting: the breaker is open (or forced open),
    or its half-open trial calls are all taken.

    Attributes:
        name: the breaker's name (by convention the dependency's).
        retry_after: seconds until a trial call may pass; 0 when unknown
            (forced open, or half-open with every trial slot in use).
    """

    def __init__(self, name: str, retry_after: float = 0.0) -> None:
        when = f"retry in {retry_after:.3g} s" if retry_after > 0 else "retry time unknown"
        super().__init__(name, f"circuit breaker open, call not attempted; {when}")
        self.name = name
        self.retry_after = retry_after
