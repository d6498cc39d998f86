"""The PostgreSQL client: a named psycopg pool with errors translated once.

Connections are made on demand (``min_size=0``) so a PostgreSQL that is down
at start-up costs nothing until biomem needs it, and the pool never logs a
reconnect storm while it is away.

Every wait for the server has a client-side deadline. ``statement_timeout``
is enforced by the server, and a partitioned server sends nothing, not even
that error: without a deadline of our own a call waits for as long as the
partition lasts. Connecting is bounded by ``connect_timeout``, the pool's
check of an idle connection by the same, and every other wait (a statement,
a commit, a COPY chunk) by ``call_timeout_s``, the statement timeout plus a
margin. A wait that overruns cancels the statement (when the server can still
hear it) and closes the connection, whose protocol state is then unknown: the
call fails with ``OperationalError`` → :class:`DatabaseUnavailable`
(transient), and the pool discards the connection. TCP keepalives and
``tcp_user_timeout`` let the kernel end connections to a peer that vanished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Final, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.abc import PQGen
from pydantic import SecretStr

from biomem.logging import get_logger
from biomem.resilience.errors import DatabaseQueryError, DatabaseUnavailable, DependencyError
from biomem.resilience.policy import Policy
from biomem.resilience.redact import redact_text

T = TypeVar("T")
RV = TypeVar("RV")

__all__ = ["DEADLINE_MARGIN_S", "PostgresClient", "classify_psycopg_error", "translate_errors"]

log = get_logger(__name__)

#: The client's deadline over the server's statement_timeout, by default: the
#: server's own error must be able to arrive before the client gives up.
DEADLINE_MARGIN_S: Final = 5.0
# psycopg's own default: how often a wait wakes up (for Ctrl-C), not a deadline.
_WAIT_INTERVAL_S: Final = 0.1
# The kernel finds a peer that vanished while a connection idles in the pool:
# a first probe after 10 s of silence, then every 5 s, dead after 3 unanswered.
_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

# SQLSTATE classes that a later attempt may clear (psycopg maps most of
# these to OperationalError, but not serialization failures or deadlocks).
_TRANSIENT_PG: tuple[type[Exception], ...] = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,  # statement_timeout
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.TooManyConnections,
    pg_errors.ConnectionException,
    pg_errors.InsufficientResources,
    pg_errors.ReadOnlySqlTransaction,  # a failover in progress
)

_POOL_ERRORS = (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, psycopg_pool.TooManyRequests)


def classify_psycopg_error(exc: BaseException) -> type[DependencyError] | None:
    """Return the biomem error class for a psycopg/psycopg_pool exception, else None."""
    if isinstance(exc, _POOL_ERRORS):
        return DatabaseUnavailable
    if isinstance(exc, _TRANSIENT_PG):
        return DatabaseUnavailable
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable
    if isinstance(exc, psycopg.Error):
        # ProgrammingError, DataError, IntegrityError, NotSupportedError, the
        # rest of DatabaseError: the statement or the data is at fault.
        return DatabaseQueryError
    return None


@contextmanager
def translate_errors(name: str = "postgresql") -> Iterator[None]:
    """Map psycopg exceptions to biomem's at the boundary, ``raise ... from``."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        cls = classify_psycopg_error(exc) or DatabaseUnavailable
        sqlstate = getattr(exc, "sqlstate", None)
        code = f" [{sqlstate}]" if sqlstate else ""
        # The server's message can quote connection parameters: redact it.
        message = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        raise cls(name, f"{type(exc).__name__}{code}: {message}") from exc


class PostgresClient:
    """A named pool of connections to one PostgreSQL database.

    Args:
        url: the database URL; kept as a secret, never logged.
        name: the dependency's name in errors, metrics and health.
        max_size: the most connections open at once.
        connect_timeout_s: how long a new connection may take; also the deadline
            of the pool's check of an idle connection and of a cancel request.
        acquire_timeout_s: how long a caller waits for a connection from the pool.
        statement_timeout_s: server-side limit for each statement.
        call_timeout_s: client-side deadline of every other wait for the server;
            by default ``statement_timeout_s`` + :data:`DEADLINE_MARGIN_S`.
        policy: the postgresql policy: :meth:`run` retries through it, and every
            connection is taken through its bulkhead and breaker.
    """

    def __init__(
        self,
        url: SecretStr,
        *,
        name: str = "postgresql",
        max_size: int = 4,
        connect_timeout_s: float = 5.0,
        acquire_timeout_s: float = 3.0,
        statement_timeout_s: float = 60.0,
        call_timeout_s: float | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.name = name
        self._policy = policy
        self._acquire_timeout_s = acquire_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self.call_timeout_s = (
            statement_timeout_s + DEADLINE_MARGIN_S if call_timeout_s is None else call_timeout_s
        )
        self.last_connect_error: str | None = None
        client = self

        class _Connection(psycopg.Connection[Any]):
            # How long one wait for the server may take on this connection (the
            # pool's check lowers it for its one round trip).
            deadline_s: float = client.call_timeout_s

            # The pool connects in a worker thread and only reports a timeout to
            # the caller; keep why the last attempt failed so errors say it.
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = super().connect(*args, **kwargs)
                except psycopg.Error as exc:
                    first = str(exc).strip().splitlines()
                    client.last_connect_error = redact_text(first[0] if first else repr(exc))
                    raise
                client.last_connect_error = None
                return conn

            # Every statement, fetch, COPY chunk, commit and rollback of a sync
            # connection waits here (connecting does not: connect_timeout bounds it).
            def wait(
                self,
                gen: PQGen[RV],
                interval: float = _WAIT_INTERVAL_S,
                timeout: float | None = None,
            ) -> RV:
                if timeout is not None:  # a deadline of psycopg's own (notifies)
                    return super().wait(gen, interval, timeout)
                deadline_s = self.deadline_s
                try:
                    return super().wait(gen, interval, deadline_s)
                except pg_errors._WaitTimeout as exc:
                    client._abandon(self, deadline_s)
                    raise psycopg.OperationalError(
                        f"no answer from the server within {deadline_s:g} s (connection closed)"
                    ) from exc

        self._url = url
        self._max_size = max_size
        self._statement_timeout_s = statement_timeout_s
        self._connection_class = _Connection
        # Guards swapping the pool (reset_pool) against close(): a reset after
        # close would open a pool nobody closes.
        self._pool_lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool()

    def _abandon(self, conn: psycopg.Connection[Any], deadline_s: float) -> None:
        """Cancel what ``conn`` runs (bounded) and close it: its protocol state is unknown."""
        cancelled = False
        # Before libpq 17 a cancel request blocks with no deadline of ours, which a
        # partitioned server would make endless: then the connection is only closed
        # (the server ends the statement when it finds the client gone, or at
        # statement_timeout).
        if psycopg.capabilities.has_cancel_safe():
            try:
                conn.cancel_safe(timeout=self._connect_timeout_s)
                cancelled = True
            except psycopg.Error as exc:
                log.info("postgres_cancel_failed", error=redact_text(str(exc).strip()[:200]))
        # close(), not a shutdown of the socket from elsewhere: this is the thread
        # using the connection (inside its wait), nobody else is reading the socket.
        conn.close()
        log.warning(
            "postgres_call_abandoned",
            dependency=self.name,
            deadline_s=deadline_s,
            cancel_sent=cancelled,
        )

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of an idle connection before it is handed out, deadline short."""
        # One round trip of an empty statement: no longer than a new connection may
        # take (a partitioned server would otherwise hold the borrower a whole call).
        # Only connections of our class carry the deadline (mypy sees the base class).
        previous: float | None = getattr(conn, "deadline_s", None)
        if previous is not None:
            conn.deadline_s = self._connect_timeout_s  # type: ignore[attr-defined]
        try:
            psycopg_pool.ConnectionPool.check_connection(conn)
        finally:
            if previous is not None:
                conn.deadline_s = previous  # type: ignore[attr-defined]

    def _new_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self._url.get_secret_value(),
            min_size=0,
            max_size=self._max_size,
            open=False,
            name=self.name,
            connection_class=self._connection_class,
            timeout=self._acquire_timeout_s,
            kwargs={
                "connect_timeout": max(1, round(self._connect_timeout_s)),
                # UTC: naive timestamps from the server are read as UTC everywhere.
                "options": (
                    f"-c statement_timeout={int(self._statement_timeout_s * 1000)} -c TimeZone=UTC"
                ),
                "application_name": "biomem",
                **_KEEPALIVES,
                # No byte we sent may stay unacknowledged longer than a call may
                # take: the kernel then ends the connection (a real partition).
                "tcp_user_timeout": int(self.call_timeout_s * 1000),
            },
            # A dead connection is found before it is handed out, not mid-batch.
            check=self._check,
            # Reconnecting is the policy's job (breaker, retry with budget): the pool
            # gives up on a failed connection at once instead of backing off on its
            # own for minutes, so the first call after PostgreSQL is back connects.
            reconnect_timeout=0,
        )
        pool.open(wait=False)
        return pool

    def reset_pool(self, *, close_timeout_s: float = 5.0) -> dict[str, int]:
        """Replace the pool with a new, empty one and close the old one; return what was dropped.

        Connections the server has ended (``pg_terminate_backend``, a failover, a
        restart) stay in a pool until each is found dead, one failed borrow at a
        time. A new pool holds none of them: the next call connects afresh.
        Connections borrowed from the old pool finish their work and are closed
        when given back.
        """
        with self._pool_lock:
            if self._closed:
                raise DatabaseUnavailable(self.name, "the client is closed")
            old = self._pool
            stats = dict(old.get_stats())
            self._pool = self._new_pool()
        old.close(timeout=close_timeout_s)
        self.last_connect_error = None
        return {
            "connections_closed": int(stats.get("pool_size", 0)),
            "connections_in_use": int(stats.get("pool_size", 0))
            - int(stats.get("pool_available", 0)),
            "connections_lost_before": int(stats.get("connections_lost", 0)),
        }

    def _wait_s(self) -> float:
        # While connecting fails, a caller need not wait longer than one attempt:
        # the pool does not wake waiters when an attempt fails.
        if self.last_connect_error is not None:
            return min(self._acquire_timeout_s, self._connect_timeout_s + 0.5)
        return self._acquire_timeout_s

    @contextmanager
    def _acquire(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with (
                translate_errors(self.name),
                self._pool.connection(timeout=self._wait_s()) as conn,
            ):
                yield conn
        except DatabaseUnavailable as exc:
            if isinstance(exc.__cause__, psycopg_pool.PoolTimeout) and self.last_connect_error:
                raise DatabaseUnavailable(
                    self.name, f"cannot connect: {self.last_connect_error}"
                ) from exc.__cause__
            raise

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a connection through the breaker; the block runs in one transaction.

        Raises:
            CircuitOpenError: the breaker is open: PostgreSQL failed too often lately.
            BulkheadFullError: every pooled connection stayed in use for the whole wait.
            DatabaseUnavailable: PostgreSQL cannot be reached or the pool is exhausted.
            DatabaseQueryError: the statement or data was rejected.
        """
        policy = self._policy
        guard = policy.breaker if policy is not None else nullcontext()
        # The bulkhead first, as in Policy.call: a caller refused a slot says
        # nothing about PostgreSQL, so the breaker never hears of it.
        slot = (
            policy.bulkhead.slot()
            if policy is not None and policy.bulkhead is not None
            else nullcontext()
        )
        with slot, guard, self._acquire() as conn:
            yield conn

    def run(
        self, fn: Callable[[psycopg.Connection[Any]], T], *, operation: str, retry: bool = True
    ) -> T:
        """Run ``fn`` in one transaction through the policy: retried when transient.

        ``fn`` must be safe to run again (a failed transaction was rolled back).
        ``retry=False`` for probes, which must answer within their own timeout.
        """
        if self._policy is None:
            return self._run_once(fn)
        return self._policy.call(lambda: self._run_once(fn), operation=operation, retry=retry)

    def _run_once(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        # The policy applies the breaker around this call: not again in here.
        with self._acquire() as conn:
            result: T = fn(conn)
        return result

    def get_stats(self) -> dict[str, int]:
        """Pool statistics (psycopg_pool's names) for metrics and health."""
        return dict(self._pool.get_stats())

    def close(self) -> None:
        """Close every connection; idempotent."""
        with self._pool_lock:
            self._closed = True
            pool = self._pool
        if not pool.closed:
            pool.close()

    def __enter__(self) -> PostgresClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
