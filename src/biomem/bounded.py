"""A blocking read bounded in time: an HTTP request or a scrape never waits on a busy store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BoundedReader"]

T = TypeVar("T")


@dataclass(slots=True)
class _Outcome(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None


class BoundedReader:
    """Runs a blocking read on a daemon thread and waits for it at most ``timeout_s``.

    A store read can wait behind the store's lock (a long write transaction);
    an HTTP request or a scrape must not wait with it. On timeout the caller
    gets :class:`TimeoutError` and the thread finishes on its own; at most
    ``max_pending`` reads are ever in flight, so a wedged store never piles
    up threads (a read over the limit is refused at once). Daemon threads,
    so a wedged read never holds up the process's exit.
    """

    def __init__(self, *, timeout_s: float = 2.0, max_pending: int = 2) -> None:
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_pending)

    def call(self, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """``fn()``'s result, or its exception, or TimeoutError after the timeout."""
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        if not self._slots.acquire(blocking=False):
            raise TimeoutError("earlier reads are still waiting for the store")
        outcome: _Outcome[T] = _Outcome()

        def work() -> None:
            try:
                outcome.value = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome.error = exc
            finally:
                self._slots.release()
                outcome.done.set()

        threading.Thread(target=work, name="biomem-bounded-read", daemon=True).start()
        if not outcome.done.wait(wait_s):
            raise TimeoutError(f"no answer from the store within {wait_s:g} s")
        if outcome.error is not None:
            raise outcome.error
        return outcome.value  # type: ignore[return-value]  # set when no error
