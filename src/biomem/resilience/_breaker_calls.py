"""Calling through a circuit breaker: ``call``, ``acall`` and the decorator.

These four paths repeat the same CLOSED fast path, plain-success recording
included, instead of sharing a helper: each extra Python call would cost about
as much as the rest of the bookkeeping (keep the four copies identical). Each
reads the generation before the state (see ``_BreakerCore._set_state``), times
the call with two clock readings, and takes the lock once, to record. Import
the breaker from :mod:`biomem.resilience.breaker`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from biomem.resilience._breaker_core import _BreakerCore
from biomem.resilience._breaker_model import BreakerState

__all__ = ["_BreakerCalls"]

P = ParamSpec("P")
R = TypeVar("R")

_CLOSED = BreakerState.CLOSED
_DISABLED = BreakerState.DISABLED


class _BreakerCalls(_BreakerCore):
    """``call``, ``acall`` and the decorator, on top of the state machine."""

    __slots__ = ()

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker; refused calls raise at once."""
        gen = self._gen
        if self._state is not _CLOSED:
            return self._call_guarded(fn, args, kwargs)
        mono = self._mono
        start = mono()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(gen, exc, start, mono())
            raise
        end = mono()
        if end - start >= self._slow_s or self._is_failure is not None:
            self._returned(gen, result, start, end)
            return result
        # A plain success, recorded inline: a matching generation under the
        # lock means the state is still the CLOSED that admitted the call.
        lock = self._lock
        lock.acquire()  # acquire/release: measurably cheaper than ``with`` here
        try:
            if gen == self._gen:
                count = self._count
                if count is not None:  # a count window: just number the outcome
                    n = count.n = count.n + 1
                    due = n == self._min_calls
                else:
                    due = self._window.record(False, False, end)
                if due:
                    self._judge_window(_CLOSED, end)
            else:  # stale: not judged, still counted (see _BreakerCore._record)
                self._past_calls += 1
        finally:
            lock.release()
        if self._pending:
            self._deliver()
        return result

    def _call_guarded(self, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
        """The call path in any state but CLOSED: admission under the lock."""
        if self._state is _DISABLED:  # no lock, no clock: DISABLED costs nothing
            return fn(*args, **kwargs)
        mono = self._mono
        start = mono()
        gen = self._admit(start)
        if gen is None:  # became DISABLED meanwhile
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(gen, exc, start, mono())
            raise
        self._returned(gen, result, start, mono())
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker; refused calls raise at once.

        The lock is never held across an ``await``; cancellation counts as ignored.
        """
        gen = self._gen
        if self._state is not _CLOSED:
            return await self._acall_guarded(fn, args, kwargs)
        mono = self._mono
        start = mono()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(gen, exc, start, mono())
            raise
        end = mono()
        if end - start >= self._slow_s or self._is_failure is not None:
            self._returned(gen, result, start, end)
            return result
        lock = self._lock  # a plain success, recorded inline as in call()
        lock.acquire()
        try:
            if gen == self._gen:
                count = self._count
                if count is not None:  # a count window: just number the outcome
                    n = count.n = count.n + 1
                    due = n == self._min_calls
                else:
                    due = self._window.record(False, False, end)
                if due:
                    self._judge_window(_CLOSED, end)
            else:  # stale: not judged, still counted (see _BreakerCore._record)
                self._past_calls += 1
        finally:
            lock.release()
        if self._pending:
            self._deliver()
        return result

    async def _acall_guarded(self, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any) -> R:
        if self._state is _DISABLED:
            return await fn(*args, **kwargs)
        mono = self._mono
        start = mono()
        gen = self._admit(start)
        if gen is None:  # became DISABLED meanwhile
            return await fn(*args, **kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(gen, exc, start, mono())
            raise
        self._returned(gen, result, start, mono())
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or ``async def``) so that every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                gen = self._gen
                if self._state is not _CLOSED:
                    return await self._acall_guarded(afn, args, kwargs)
                mono = self._mono
                start = mono()
                try:
                    result = await afn(*args, **kwargs)
                except BaseException as exc:
                    self._settle_exception(gen, exc, start, mono())
                    raise
                end = mono()
                if end - start >= self._slow_s or self._is_failure is not None:
                    self._returned(gen, result, start, end)
                    return result
                lock = self._lock  # a plain success, recorded inline as in call()
                lock.acquire()
                try:
                    if gen == self._gen:
                        count = self._count
                        if count is not None:  # a count window: just number the outcome
                            n = count.n = count.n + 1
                            due = n == self._min_calls
                        else:
                            due = self._window.record(False, False, end)
                        if due:
                            self._judge_window(_CLOSED, end)
                    else:  # stale: not judged, still counted
                        self._past_calls += 1
                finally:
                    lock.release()
                if self._pending:
                    self._deliver()
                return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            gen = self._gen
            if self._state is not _CLOSED:
                return self._call_guarded(fn, args, kwargs)
            mono = self._mono
            start = mono()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._settle_exception(gen, exc, start, mono())
                raise
            end = mono()
            if end - start >= self._slow_s or self._is_failure is not None:
                self._returned(gen, result, start, end)
                return result
            lock = self._lock  # a plain success, recorded inline as in call()
            lock.acquire()
            try:
                if gen == self._gen:
                    count = self._count
                    if count is not None:  # a count window: just number the outcome
                        n = count.n = count.n + 1
                        due = n == self._min_calls
                    else:
                        due = self._window.record(False, False, end)
                    if due:
                        self._judge_window(_CLOSED, end)
                else:  # stale: not judged, still counted
                    self._past_calls += 1
            finally:
                lock.release()
            if self._pending:
                self._deliver()
            return result

        return wrapper
