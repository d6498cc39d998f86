"""Bulkheads: a bound on the calls in flight to one dependency.

A caller waits at most ``max_wait_s`` for a slot (0: not at all; None: as long
as it takes) and is then refused with :class:`BulkheadFullError`, so a slow
dependency ties up a bounded number of threads or tasks instead of all of
them. The async side keeps one semaphore per event loop (an asyncio semaphore
belongs to the loop that first uses it; biomem runs a loop per stage run).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from biomem.resilience.errors import DependencyError

__all__ = ["Bulkhead", "BulkheadFullError"]


class BulkheadFullError(DependencyError):
    """Every slot for the dependency stayed busy for the whole wait."""

    def __init__(self, name: str, max_concurrent: int, waited_s: float) -> None:
        super().__init__(
            name, f"{max_concurrent} calls already in flight; waited {waited_s:.1f} s for a slot"
        )
        self.max_concurrent = max_concurrent


class Bulkhead:
    """At most ``max_concurrent`` calls at once; waiting callers give up after ``max_wait_s``."""

    def __init__(self, name: str, *, max_concurrent: int, max_wait_s: float | None = 0.0) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if max_wait_s is not None and max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more, got {max_wait_s}")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait_s = max_wait_s
        self._threads = threading.BoundedSemaphore(max_concurrent)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now (sync and async)."""
        return self._in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _exit(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the block (threads)."""
        wait = self.max_wait_s
        if wait is None:
            acquired = self._threads.acquire()
        elif wait == 0:
            acquired = self._threads.acquire(blocking=False)
        else:
            acquired = self._threads.acquire(timeout=wait)
        if not acquired:
            raise BulkheadFullError(self.name, self.max_concurrent, wait or 0.0)
        self._enter()
        try:
            yield
        finally:
            self._exit()
            self._threads.release()

    @asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        """Hold a slot for the block (tasks of the running loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._loops.get(loop)
            if semaphore is None:
                semaphore = self._loops[loop] = asyncio.Semaphore(self.max_concurrent)
        wait = self.max_wait_s
        if wait == 0 and semaphore.locked():
            raise BulkheadFullError(self.name, self.max_concurrent, 0.0)
        try:
            async with asyncio.timeout(wait or None):
                await semaphore.acquire()
        except TimeoutError:
            raise BulkheadFullError(self.name, self.max_concurrent, wait or 0.0) from None
        self._enter()
        try:
            yield
        finally:
            self._exit()
            semaphore.release()
