"""Sliding windows of call outcomes for the circuit breaker (private).

Two windows, one interface: ``record(failed, slow, now)``, ``snapshot(now)``
returning ``(calls, failures, slow)``, ``totals()`` returning the same counts
for everything recorded since the last reset (in the window or aged out), and
``reset()``. Both keep running totals, so recording and reading cost O(1)
(amortised) whatever the window's size.

``record`` also answers whether the rates are due for judging: only when the
window holds at least ``minimum`` calls and something may have raised a rate
(a failed or slow outcome, the window first reaching ``minimum``, or old
outcomes aging out of a time window). A plain success otherwise never raises
a rate (failures stay, calls grow), so the breaker's hot path skips the
judging. Neither window is thread-safe: the breaker calls them under its lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

__all__ = ["CountWindow", "SlidingWindow", "TimeWindow"]


class SlidingWindow(Protocol):
    """The outcomes of the most recent calls, as running totals."""

    def record(self, failed: bool, slow: bool, now: float) -> bool:
        """Add one outcome observed at ``now`` (clock seconds); return whether to judge."""
        ...

    def snapshot(self, now: float) -> tuple[int, int, int]:
        """Return ``(calls, failures, slow)`` in the window as of ``now``."""
        ...

    def totals(self) -> tuple[int, int, int]:
        """Return ``(calls, failures, slow)`` recorded since the last reset."""
        ...

    def reset(self) -> None:
        """Forget every outcome."""
        ...


class CountWindow:
    """The last ``size`` outcomes.

    Outcomes are numbered; only the failed or slow ones are kept, with their
    number, oldest first. A plain success (the common case) therefore costs a
    counter increment (see ``n``); kept outcomes that fell out of the window
    (numbered ``n - size`` or lower) are dropped when the next bad outcome
    arrives or the totals are read, each once.
    """

    __slots__ = (
        "_bad",
        "_failures",
        "_failures_total",
        "_minimum",
        "_size",
        "_slow",
        "_slow_total",
        "n",
    )

    def __init__(self, size: int, minimum: int = 1) -> None:
        if size < 1 or not 1 <= minimum <= size:
            raise ValueError(f"need 1 ≤ minimum ≤ size, got size {size}, minimum {minimum}")
        self._size = size
        self._minimum = minimum
        # Outcomes recorded since the last reset. Public because a plain success
        # may be recorded as ``n += 1`` alone (judge when n reaches the
        # minimum): the breaker's hot path does so.
        self.n = 0
        self._bad: deque[tuple[int, bool, bool]] = deque()  # (number, failed, slow)
        self._failures = 0  # among the kept outcomes, evicted or not yet
        self._slow = 0
        # Since the last reset, never evicted: only bad outcomes add to them,
        # so the plain-success path stays ``n += 1``.
        self._failures_total = 0
        self._slow_total = 0

    def _evict(self) -> None:
        bad = self._bad
        oldest = self.n - self._size
        while bad and bad[0][0] <= oldest:
            _, failed, slow = bad.popleft()
            self._failures -= failed
            self._slow -= slow

    def record(self, failed: bool, slow: bool, now: float) -> bool:
        n = self.n + 1
        self.n = n
        if failed or slow:
            self._evict()  # keeps at most ``size`` outcomes in memory
            self._bad.append((n, failed, slow))
            self._failures += failed
            self._slow += slow
            self._failures_total += failed
            self._slow_total += slow
            return n >= self._minimum
        return n == self._minimum

    def snapshot(self, now: float) -> tuple[int, int, int]:
        self._evict()
        n = self.n
        return (n if n < self._size else self._size), self._failures, self._slow

    def totals(self) -> tuple[int, int, int]:
        return self.n, self._failures_total, self._slow_total

    def reset(self) -> None:
        self.n = 0
        self._bad.clear()
        self._failures = self._failures_total = 0
        self._slow = self._slow_total = 0


class TimeWindow:
    """The outcomes of the last ``seconds`` whole seconds.

    The window keeps cumulative totals since the last reset, and a mark of
    those totals at the start of each second that saw a record (``epoch =
    int(now)``). At second ``E`` the window holds the seconds after
    ``E - seconds``: its totals are the cumulative ones minus the mark of the
    oldest second still inside. Recording adds to the cumulative totals (O(1),
    no per-bucket update); marks are appended once and dropped lazily, once,
    when a later record or snapshot finds them too old: O(1) amortised, and an
    idle hour costs nothing.
    """

    __slots__ = (
        "_aged",
        "_base_calls",
        "_base_failures",
        "_base_slow",
        "_calls",
        "_failures",
        "_head_end",
        "_marks",
        "_minimum",
        "_seconds",
        "_slow",
    )

    # Cumulative totals since the last reset, and the window's base (set in reset()).
    _calls: int
    _failures: int
    _slow: int
    _base_calls: int
    _base_failures: int
    _base_slow: int
    _head_end: float  # where the newest second with a mark ends
    _aged: bool

    def __init__(self, seconds: int, minimum: int = 1) -> None:
        if seconds < 1 or minimum < 1:
            raise ValueError(f"need seconds ≥ 1 and minimum ≥ 1, got {seconds}, {minimum}")
        self._seconds = seconds
        self._minimum = minimum
        # (epoch, calls, failures, slow): the cumulative totals as that second began.
        self._marks: deque[tuple[int, int, int, int]] = deque()
        self.reset()

    def _expire(self, epoch: int) -> None:
        """Move the window's start to second ``epoch - seconds + 1``."""
        marks = self._marks
        oldest = epoch - self._seconds
        if not marks or marks[0][0] > oldest:
            return
        while marks and marks[0][0] <= oldest:
            marks.popleft()
        if marks:  # the window now starts where its oldest second began
            _, self._base_calls, self._base_failures, self._base_slow = marks[0]
        else:  # nothing left: the window is empty
            self._base_calls, self._base_failures = self._calls, self._failures
            self._base_slow = self._slow
        # Until the rates are next due, a plain success may find one risen.
        self._aged = True

    def record(self, failed: bool, slow: bool, now: float) -> bool:
        if now >= self._head_end:  # a new second: a float compare spares int() per record
            epoch = int(now)
            self._expire(epoch)  # marks can only expire when the second changes
            self._marks.append((epoch, self._calls, self._failures, self._slow))
            self._head_end = epoch + 1
        # A record whose ``now`` is behind the newest second (two threads racing
        # across a second boundary) counts in the newest second: at most a
        # second late, and never lost.
        total = self._calls = self._calls + 1
        calls = total - self._base_calls
        if failed or slow:
            self._failures += failed
            self._slow += slow
            due = calls >= self._minimum
        # Calls grow by one per record, so they reach the minimum exactly; past
        # it, only aging can have raised a rate.
        elif calls == self._minimum:
            due = True
        elif self._aged:
            due = calls > self._minimum
        else:
            return False
        if due:
            self._aged = False
        return due

    def snapshot(self, now: float) -> tuple[int, int, int]:
        self._expire(int(now))
        return (
            self._calls - self._base_calls,
            self._failures - self._base_failures,
            self._slow - self._base_slow,
        )

    def totals(self) -> tuple[int, int, int]:
        return self._calls, self._failures, self._slow

    def reset(self) -> None:
        self._marks.clear()
        self._head_end = -math.inf
        self._calls = self._failures = self._slow = 0
        self._base_calls = self._base_failures = self._base_slow = 0
        self._aged = False
