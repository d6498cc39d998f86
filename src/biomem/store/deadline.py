"""A deadline on each call to the store, enforced by interrupting DuckDB from a watchdog.

DuckDB has no ``statement_timeout``: a statement runs until it ends or another
thread calls the connection's ``interrupt()``, which fails the statement with
an ``InterruptException`` and aborts its transaction. :class:`CallDeadline`
is that other thread. A store call (one statement, or one transaction block
as a whole) arms it once the store's lock is held, so time spent queueing
behind another call does not count; a call still running ``timeout_s`` later
has its running statement interrupted, and every statement it starts after
that too, until it ends. The call then fails with :class:`DatabaseUnavailable`
(transient: the policy may retry it; the breaker counts it, so a store that
keeps overrunning opens the breaker and the pipeline pauses).

Calls never overlap (the store runs one at a time behind its lock), so one
watchdog thread serves every call; a call nested in another on the same
thread (a statement inside a transaction block) is bounded by the outer one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import duckdb

from biomem.logging import get_logger
from biomem.resilience.errors import DatabaseUnavailable

__all__ = ["SETTING", "CallDeadline"]

log = get_logger(__name__)

SETTING: Final = "[resilience.duckdb] call_timeout_seconds"


class CallDeadline:
    """Interrupts a store call that runs longer than ``timeout_s``.

    Args:
        timeout_s: the longest a call may hold the store.
        interrupt: interrupts the statement running now (``DuckDBStore.interrupt``);
            harmless when none is running.
        repeat_s: after the deadline, interrupts again this often, so a block that
            was between statements at the deadline cannot start a new one unbounded.
    """

    def __init__(
        self, timeout_s: float, interrupt: Callable[[], None], *, repeat_s: float = 0.05
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be above 0, got {timeout_s}")
        if not repeat_s > 0:
            raise ValueError(f"repeat_s must be above 0, got {repeat_s}")
        self.timeout_s = timeout_s
        self._interrupt = interrupt
        self._repeat_s = repeat_s
        self._cond = threading.Condition()
        self._due: float | None = None  # of the call in progress; None: no call
        self._depth = 0
        self._fired = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._timed_out = 0

    @property
    def timed_out(self) -> int:
        """Calls that overran the deadline and were interrupted, since start."""
        return self._timed_out

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """Bound the call inside; enter it holding the store's lock.

        Raises:
            DatabaseUnavailable: the call overran and its statement was interrupted.
        """
        with self._cond:
            self._depth += 1
            outer = self._depth == 1
            if outer:
                # Real time on purpose: the statement bounded runs in real time, and
                # the watchdog waits on a Condition, which no fake clock can move.
                self._due = time.monotonic() + self.timeout_s
                self._fired = False
                self._ensure_thread()
                self._cond.notify()
        try:
            yield
        except (duckdb.Error, DatabaseUnavailable) as exc:
            # Only the outer call knows whether its deadline fired; an inner call's
            # InterruptException arrives here already translated.
            if outer and self._fired:
                self._timed_out += 1
                log.warning("store_call_timed_out", timeout_s=self.timeout_s)
                raise DatabaseUnavailable(
                    "duckdb",
                    f"call timed out after {self.timeout_s:g} s and was interrupted ({SETTING})",
                ) from exc
            raise
        finally:
            with self._cond:
                self._depth -= 1
                if outer:
                    # Under the condition's lock: once this returns, the watchdog
                    # interrupts nothing more (not the COMMIT or ROLLBACK that follows).
                    self._due = None
                    self._cond.notify()

    def close(self) -> None:
        """Stop the watchdog thread (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._watch, name="biomem-duckdb-deadline", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                due = self._due
                if due is None:
                    self._cond.wait()
                    continue
                remaining = due - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._fired = True
                try:
                    self._interrupt()
                except Exception:  # the watchdog never dies
                    log.exception("store_interrupt_failed")
                self._cond.wait(self._repeat_s)
