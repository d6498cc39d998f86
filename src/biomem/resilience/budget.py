"""Retry budget: retries stay a fraction of recent calls, so an outage never multiplies load.

A per-call retry limit alone is not enough: with 4 attempts a call, a
dependency that is down receives four times the traffic it received while
healthy, exactly when it can least bear it. A budget caps retries across
*all* calls, the way Finagle's ``RetryBudget`` and gRPC's retry throttling
do: every call deposits ``ratio`` of a token, every retry withdraws one, and
deposits and withdrawals expire after ``window_s``, so the budget reflects
recent traffic only. A reserve of ``min_retries_per_s × window_s`` tokens lets
a process with little traffic still retry.

Over any stretch of time ``T`` the number of retries is at most about
``ratio × calls + min_retries_per_s × (T + window_s)``.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta

from biomem.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["RetryBudget"]

# Tokens are counted as integers in millionths, so that adding and expiring
# deposits a million times never accumulates float error.
_SCALE = 1_000_000


def _number(value: object, name: str, accepts: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {accepts}, got {value!r}")
    return float(value)


class RetryBudget:
    """A token bucket shared by every call to one dependency.

    Args:
        ratio: tokens each call deposits; 0.1 allows retries for 10% of calls.
        min_retries_per_s: retries allowed per second whatever the traffic.
        window_s: how long deposits and withdrawals count (float seconds or
            timedelta), in slices of about one second; an entry expires
            between ``window_s - 1`` and ``window_s`` after it was made.
        clock: the time source.

    Thread-safe; every operation is O(1) amortised.
    """

    __slots__ = (
        "_clock",
        "_deposit",
        "_index",
        "_lock",
        "_monotonic",
        "_net",
        "_reserve",
        "_slice_no",
        "_slice_s",
        "_slices",
        "min_retries_per_s",
        "ratio",
        "window_s",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        min_retries_per_s: float = 1.0,
        window_s: float | timedelta = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        ratio = _number(ratio, "ratio", "a number")
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")
        min_retries_per_s = _number(min_retries_per_s, "min_retries_per_s", "a number")
        if not (math.isfinite(min_retries_per_s) and min_retries_per_s >= 0):
            raise ValueError(
                f"min_retries_per_s must be a finite number >= 0, got {min_retries_per_s!r}"
            )
        window = (
            window_s.total_seconds()
            if isinstance(window_s, timedelta)
            else _number(window_s, "window_s", "seconds (float) or a timedelta")
        )
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window_s must be finite and > 0 seconds, got {window_s!r}")

        self.ratio = ratio
        self.min_retries_per_s = min_retries_per_s
        self.window_s = window
        self._deposit = round(ratio * _SCALE)
        self._reserve = round(min_retries_per_s * window * _SCALE)
        # One slice per second (at least one slice): expiring means zeroing
        # the slices time has moved past, never scanning individual entries.
        count = max(1, math.ceil(window))
        self._slice_s = window / count
        self._slices = [0] * count
        self._net = 0  # sum of self._slices: deposits minus withdrawals in the window
        self._clock = clock
        self._monotonic = clock.monotonic
        self._lock = threading.Lock()
        self._slice_no = math.floor(clock.monotonic() / self._slice_s)
        self._index = self._slice_no % count

    def _roll(self, slice_no: int) -> None:
        """Expire the slices that fell out of the window by slice ``slice_no``; the lock is held."""
        if slice_no <= self._slice_no:  # same slice, or a thread that read the clock earlier
            return
        slices = self._slices
        count = len(slices)
        # Only the slices between the old and the new one are stale; after a
        # gap longer than the window that is all of them, once each.
        for k in range(
            self._slice_no + 1, self._slice_no + 1 + min(slice_no - self._slice_no, count)
        ):
            i = k % count
            self._net -= slices[i]
            slices[i] = 0
        self._slice_no = slice_no
        self._index = slice_no % count

    def on_call(self) -> None:
        """Record a call (a first attempt): deposit ``ratio`` of a token."""
        # On every call's path, so kept lean: the clock is read outside the
        # lock, the slices roll (a method call) only when a new second has
        # begun, and acquire/release costs half of a ``with`` block.
        slice_no = math.floor(self._monotonic() / self._slice_s)
        deposit = self._deposit
        lock = self._lock
        lock.acquire()
        try:
            if slice_no != self._slice_no:
                self._roll(slice_no)
            self._slices[self._index] += deposit
            self._net += deposit
        finally:
            lock.release()

    def try_retry(self) -> bool:
        """Withdraw one token for a retry; False (and nothing withdrawn) when none is left."""
        slice_no = math.floor(self._monotonic() / self._slice_s)
        with self._lock:
            self._roll(slice_no)
            if self._reserve + self._net < _SCALE:
                return False
            self._slices[self._index] -= _SCALE
            self._net -= _SCALE
            return True

    def available(self) -> float:
        """Retries the budget would allow right now (may be fractional)."""
        slice_no = math.floor(self._monotonic() / self._slice_s)
        with self._lock:
            self._roll(slice_no)
            return max(0, self._reserve + self._net) / _SCALE

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_retries_per_s={self.min_retries_per_s}, "
            f"window_s={self.window_s}, available={self.available():.3f})"
        )
