"""Circuit breaker: sliding-window failure and slow-call rates, bounded half-open trials.

::

                 window calls ≥ minimum_calls and
                 (failure rate ≥ threshold or slow-call rate ≥ threshold)
        CLOSED ───────────────────────────────────────────────────────► OPEN
          ▲                                                           │  ▲
          │ the trials' rates stay below                  first acquire()  │ the trials' rates
          │ both thresholds: window reset                 after the wait   │ reach a threshold:
          │                                                           ▼  │ wait × multiplier
          └──────────────────────────────────────────────────────── HALF_OPEN
                      admits exactly permitted_calls_in_half_open trials

    Set by hand only: DISABLED (every call passes, nothing is recorded or
    emitted), FORCED_OPEN (every call is refused), METRICS_ONLY (calls are
    recorded and rates reported, the breaker never trips).

Semantics:

* A refused call raises :class:`CircuitOpenError` at once, carrying
  ``retry_after``; the breaker never blocks and runs no timer thread: OPEN
  becomes HALF_OPEN lazily, on the first ``acquire()`` after the wait.
* Outcomes: an exception of an ``ignore_exceptions`` type is ignored (it
  counts neither way, and frees its half-open slot); one of a
  ``record_exceptions`` type for which ``record_predicate`` (if any) holds is a
  failure; any other ``Exception`` is a success (the dependency answered); a
  ``BaseException`` such as cancellation is ignored. A returned value is a
  failure when ``result_is_failure(value)`` holds. A call lasting at least
  ``slow_call_duration_s`` is also slow, failed or not.
* Each state change starts a new *generation*. An outcome is recorded only in
  the generation that admitted its call, so a call admitted while CLOSED that
  finishes after the breaker opened, or a trial from an earlier half-open
  round, cannot corrupt the current state.
* Concurrency: one small lock guards the state and the window, held only for
  bookkeeping, never while the protected call runs. In CLOSED state the call
  path reads the state without the lock and takes it once, to record.
* Events are queued under that lock (so they keep their order) and delivered
  after it is released, by one thread at a time; a listener that raises is
  logged and ignored, and a listener may call back into the breaker.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeAlias, TypeVar, cast

from biomem.resilience._breaker_model import (
    BreakerConfig,
    BreakerEvent,
    BreakerListener,
    BreakerMetrics,
    BreakerState,
    CallNotPermitted,
    FailureRateExceeded,
    SlowCallRateExceeded,
    StateTransition,
)
from biomem.resilience._window import CountWindow, SlidingWindow, TimeWindow
from biomem.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from biomem.resilience.errors import CircuitOpenError

__all__ = [
    "BreakerConfig",
    "BreakerEvent",
    "BreakerListener",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "CallNotPermitted",
    "CircuitBreaker",
    "FailureRateExceeded",
    "Permit",
    "SlowCallRateExceeded",
    "StateTransition",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_DISABLED = BreakerState.DISABLED
_FORCED_OPEN = BreakerState.FORCED_OPEN
_METRICS_ONLY = BreakerState.METRICS_ONLY

_DEFAULT_CONFIG = BreakerConfig()

# How an exception counts (see the module docstring).
_SUCCESS, _FAILURE, _IGNORE = 0, 1, 2


# --------------------------------------------------------------------------- breaker

# Frames of ``with breaker:`` blocks in the current thread or task, innermost
# last: (breaker, generation, start). A ContextVar rather than an attribute:
# one breaker is entered by many threads and tasks at once.
_Frame: TypeAlias = tuple["CircuitBreaker", "int | None", float]
_FRAMES: ContextVar[tuple[_Frame, ...]] = ContextVar("biomem_breaker_frames", default=())


class Permit:
    """Leave to make one call; report its outcome exactly once.

    Only the first report counts. A permit reported after the breaker changed
    state is dropped (see generations in the module docstring). A half-open
    permit that is never reported keeps its trial slot: always report.
    """

    __slots__ = ("_breaker", "_gen", "_settled", "_start")

    def __init__(self, breaker: CircuitBreaker, gen: int | None, start: float) -> None:
        self._breaker = breaker
        self._gen = gen  # None: DISABLED, nothing to report
        self._start = start
        self._settled = gen is None

    def _take(self, duration_s: float | timedelta | None) -> tuple[int, float, float] | None:
        """Mark the permit used; return (generation, duration, now) or None if it was."""
        if self._settled or self._gen is None:
            return None
        self._settled = True
        now = self._breaker._mono()
        if duration_s is None:
            duration = now - self._start
        elif isinstance(duration_s, timedelta):
            duration = duration_s.total_seconds()
        else:
            duration = duration_s
        return self._gen, duration, now

    def success(self, duration_s: float | timedelta | None = None) -> None:
        """The call succeeded; ``duration_s`` defaults to the time since ``acquire()``."""
        if (taken := self._take(duration_s)) is not None:
            gen, duration, now = taken
            breaker = self._breaker
            breaker._record(gen, False, duration >= breaker._slow_s, now)

    def failure(
        self, exc: BaseException | None = None, duration_s: float | timedelta | None = None
    ) -> None:
        """The call raised ``exc`` (classified per the config; None: a plain failure)."""
        if (taken := self._take(duration_s)) is not None:
            gen, duration, now = taken
            breaker = self._breaker
            kind = _FAILURE if exc is None else breaker._classify(exc)
            if kind == _IGNORE:
                breaker._release(gen)
            else:
                breaker._record(gen, kind == _FAILURE, duration >= breaker._slow_s, now)

    def result(self, value: object, duration_s: float | timedelta | None = None) -> None:
        """The call returned ``value``: a failure if ``result_is_failure(value)``."""
        if (taken := self._take(duration_s)) is not None:
            gen, duration, now = taken
            breaker = self._breaker
            failed = breaker._result_failed(value)
            breaker._record(gen, failed, duration >= breaker._slow_s, now)

    def ignore(self) -> None:
        """The call counts neither way; a half-open trial slot is freed."""
        if (taken := self._take(0.0)) is not None:
            self._breaker._release(taken[0])


class CircuitBreaker:
    """A circuit breaker (see the module docstring for states and semantics).

    Args:
        name: names the breaker in errors, events and metrics.
        config: how calls are judged.
        clock: the time source (a FakeClock in tests).
        listeners: receive every event (see :meth:`add_listener`).
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_config",
        "_consecutive_opens",
        "_count",
        "_delivering",
        "_fail_threshold",
        "_gen",
        "_ignore_types",
        "_is_failure",
        "_judging_trials",
        "_listeners",
        "_lock",
        "_min_calls",
        "_mono",
        "_name",
        "_not_permitted",
        "_open_until",
        "_open_wait",
        "_pending",
        "_predicate",
        "_rates_reported",
        "_record_types",
        "_slow_s",
        "_slow_threshold",
        "_state",
        "_trials",
        "_trials_admitted",
        "_trials_done",
        "_trials_failed",
        "_trials_slow",
        "_window",
    )

    def __init__(
        self,
        name: str,
        config: BreakerConfig = _DEFAULT_CONFIG,
        *,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        # The system clock's monotonic() is time.monotonic; calling it directly
        # saves a Python-level call twice per protected call.
        self._mono: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._gen = 0
        self._window: SlidingWindow
        self._count: CountWindow | None  # the window again, when it counts calls
        if config.window_type == "count":
            self._min_calls = min(config.minimum_calls, config.window_size)
            self._window = self._count = CountWindow(config.window_size, self._min_calls)
        else:
            self._min_calls = config.minimum_calls
            self._window = TimeWindow(config.window_size, self._min_calls)
            self._count = None
        self._fail_threshold = config.failure_rate_threshold
        self._slow_threshold = config.slow_call_rate_threshold
        self._slow_s = config.slow_call_duration_s
        self._record_types = config.record_exceptions
        self._ignore_types = config.ignore_exceptions
        self._predicate = config.record_predicate
        self._is_failure = config.result_is_failure
        self._open_until = 0.0
        self._open_wait = 0.0
        self._consecutive_opens = 0
        self._trials = config.permitted_calls_in_half_open
        self._trials_admitted = 0
        self._trials_done = 0
        self._trials_failed = 0
        self._trials_slow = 0
        # Whether metrics() shows the trials rather than the window: from
        # HALF_OPEN until the next CLOSED (so also in the OPEN a failed trial
        # round leads to, as the numbers that reopened the breaker).
        self._judging_trials = False
        self._not_permitted = 0
        self._rates_reported = False  # METRICS_ONLY reports each crossing once
        self._listeners: tuple[BreakerListener, ...] = tuple(listeners)
        self._pending: deque[BreakerEvent] = deque()
        self._delivering = threading.Lock()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state.value}>"

    # ----------------------------------------------------------------- reading

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._name

    @property
    def config(self) -> BreakerConfig:
        """The breaker's configuration."""
        return self._config

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN only on the next acquire)."""
        return self._state

    def retry_after(self) -> float:
        """Seconds until a trial call may pass; 0 when one may pass now or when unknown."""
        if self._state is _OPEN:
            return max(0.0, self._open_until - self._mono())
        return 0.0

    def metrics(self) -> BreakerMetrics:
        """The breaker's numbers now (see :class:`BreakerMetrics`)."""
        now = self._mono()
        with self._lock:
            state = self._state
            if self._judging_trials:
                calls, failed, slow = self._trials_done, self._trials_failed, self._trials_slow
                minimum = self._trials
            else:
                calls, failed, slow = self._window.snapshot(now)
                minimum = self._min_calls
            not_permitted, opens = self._not_permitted, self._consecutive_opens
        judged = calls >= minimum  # minimum ≥ 1: never a division by zero
        return BreakerMetrics(
            state=state,
            failure_rate=failed / calls if judged else -1.0,
            slow_call_rate=slow / calls if judged else -1.0,
            calls=calls,
            failed_calls=failed,
            slow_calls=slow,
            not_permitted_calls=not_permitted,
            consecutive_opens=opens,
        )

    def add_listener(self, listener: BreakerListener) -> None:
        """Send every later event to ``listener`` too."""
        with self._lock:
            # A new tuple, never mutated: delivery iterates it without the lock.
            self._listeners = (*self._listeners, listener)

    # ----------------------------------------------------------------- calling
    #
    # call(), acall() and the two decorator wrappers repeat the same CLOSED
    # fast path, plain-success recording included, instead of sharing a
    # helper: each extra Python call would cost about as much as the rest of
    # the bookkeeping (keep the four copies identical). Each reads the generation before the
    # state (see _set_state), times the call with two clock readings, and
    # takes the lock once, to record.

    def acquire(self) -> Permit:
        """Ask to make one call; raise :class:`CircuitOpenError` at once if refused.

        Report the outcome on the returned :class:`Permit`.
        """
        now = self._mono()
        gen: int | None = self._gen
        if self._state is not _CLOSED:
            gen = self._admit(now)
        return Permit(self, gen, now)

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
            finally:
                lock.release()
            if self._pending:
                self._deliver()
            return result

        return wrapper

    def __enter__(self) -> Self:
        start = self._mono()
        gen: int | None = self._gen
        if self._state is not _CLOSED:
            gen = self._admit(start)
        _FRAMES.set((*_FRAMES.get(), (self, gen, start)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frames = _FRAMES.get()
        for i in range(len(frames) - 1, -1, -1):  # this breaker's innermost frame
            if frames[i][0] is self:
                break
        else:
            return  # an exit without an enter in this context: nothing to settle
        _, gen, start = frames[i]
        _FRAMES.set(frames[:i] + frames[i + 1 :])
        if gen is None:  # DISABLED
            return
        end = self._mono()
        if exc is None:
            self._record(gen, False, end - start >= self._slow_s, end)
        else:
            self._settle_exception(gen, exc, start, end)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # ----------------------------------------------------------------- manual control

    def transition_to_closed(self) -> None:
        """Close the breaker: a fresh window, the open wait back to its base."""
        self._transition(_CLOSED)

    def transition_to_open(self) -> None:
        """Open the breaker now, as if its thresholds had been reached."""
        self._transition(_OPEN)

    def transition_to_forced_open(self) -> None:
        """Refuse every call until another manual transition."""
        self._transition(_FORCED_OPEN)

    def transition_to_disabled(self) -> None:
        """Let every call pass, recording and emitting nothing."""
        self._transition(_DISABLED)

    def transition_to_metrics_only(self) -> None:
        """Let every call pass and record it, without ever tripping."""
        self._transition(_METRICS_ONLY)

    def reset(self) -> None:
        """Back to CLOSED with a fresh window, whatever the state; refused counts remain."""
        now = self._mono()
        with self._lock:
            if self._state is _CLOSED:
                self._gen += 1  # calls admitted before the reset do not count after it
                self._window.reset()
                self._consecutive_opens = 0
            else:
                self._close(now)
        self._deliver()

    def _transition(self, to: BreakerState) -> None:
        now = self._mono()
        with self._lock:
            if self._state is to:
                return
            if to is _CLOSED:
                self._close(now)
            elif to is _OPEN:
                self._open(now)
            else:
                if to is _METRICS_ONLY:
                    self._window.reset()
                    self._rates_reported = False
                self._set_state(to, now)
        self._deliver()

    # ----------------------------------------------------------------- bookkeeping

    def _admit(self, now: float) -> int | None:
        """Admit a call outside the CLOSED fast path: its generation, None if DISABLED.

        Raises:
            CircuitOpenError: the call is refused.
        """
        gen: int | None = None
        refused = False
        retry_after = 0.0
        with self._lock:
            state = self._state
            if state is _OPEN and now >= self._open_until:
                self._set_state(_HALF_OPEN, now)
                state = _HALF_OPEN
            if state is _HALF_OPEN:
                if self._trials_admitted < self._trials:
                    self._trials_admitted += 1
                    gen = self._gen
                else:
                    refused = True  # retry_after unknown: it depends on the trials in flight
            elif state is _CLOSED or state is _METRICS_ONLY:
                gen = self._gen
            elif state is not _DISABLED:  # OPEN, FORCED_OPEN
                refused = True
                if state is _OPEN:
                    retry_after = max(0.0, self._open_until - now)
            if refused:
                self._not_permitted += 1
                if self._listeners:
                    self._pending.append(CallNotPermitted(self._name, now))
        if self._pending:  # deliver outside the lock
            self._deliver()
        if refused:
            raise CircuitOpenError(self._name, retry_after)
        return gen

    def _result_failed(self, value: object) -> bool:
        is_failure = self._is_failure
        if is_failure is None:
            return False
        try:
            return bool(is_failure(value))
        except Exception:  # a broken predicate must not lose the outcome: count a failure
            logger.exception("breaker %s: result_is_failure raised; counted as failure", self._name)
            return True

    def _classify(self, exc: BaseException) -> int:
        if isinstance(exc, self._ignore_types):
            return _IGNORE
        if isinstance(exc, self._record_types):
            predicate = self._predicate
            if predicate is None:
                return _FAILURE
            try:
                if predicate(exc):
                    return _FAILURE
            except Exception:  # a broken predicate must not lose the outcome: count a failure
                logger.exception(
                    "breaker %s: record_predicate raised; counted as failure", self._name
                )
                return _FAILURE
        # Not recorded: the dependency answered (success) unless the call never
        # finished (cancellation, KeyboardInterrupt, GeneratorExit: ignored).
        return _SUCCESS if isinstance(exc, Exception) else _IGNORE

    def _settle_exception(self, gen: int, exc: BaseException, start: float, end: float) -> None:
        kind = self._classify(exc)
        if kind == _IGNORE:
            self._release(gen)
        else:
            self._record(gen, kind == _FAILURE, end - start >= self._slow_s, end)

    def _release(self, gen: int) -> None:
        """An ignored call: free its half-open trial slot, if it holds one."""
        # Unlocked pre-check: if the state is not HALF_OPEN now, a trial of
        # ``gen`` is already stale, and a CLOSED call holds no slot.
        if self._state is not _HALF_OPEN:
            return
        with self._lock:
            if gen == self._gen and self._state is _HALF_OPEN:
                self._trials_admitted -= 1

    def _returned(self, gen: int, result: object, start: float, end: float) -> None:
        """Record a call of generation ``gen`` that returned ``result``.

        The call paths inline the commonest case (a plain success in CLOSED);
        this handles the rest.
        """
        failed = False if self._is_failure is None else self._result_failed(result)
        self._record(gen, failed, end - start >= self._slow_s, end)

    def _record(self, gen: int, failed: bool, slow: bool, now: float) -> None:
        """Record one outcome of a call admitted in generation ``gen``."""
        lock = self._lock
        lock.acquire()  # acquire/release: measurably cheaper than ``with`` here
        try:
            if gen != self._gen:
                return  # admitted before a state change: stale
            state = self._state
            if state is _CLOSED:
                if self._window.record(failed, slow, now):
                    self._judge_window(state, now)
            elif state is _HALF_OPEN:
                self._judge_trial(failed, slow, now)
            elif state is _METRICS_ONLY:
                # Judged at every call, to notice the rates dropping back too.
                self._window.record(failed, slow, now)
                self._judge_window(state, now)
            else:
                return  # OPEN, FORCED_OPEN, DISABLED record nothing
        finally:
            lock.release()
        if self._pending:
            self._deliver()

    # The methods below run with the lock held.

    def _judge_window(self, state: BreakerState, now: float) -> None:
        calls, failures, slow = self._window.snapshot(now)
        if calls < self._min_calls:
            return
        failure_rate = failures / calls
        slow_rate = slow / calls
        if failure_rate < self._fail_threshold and slow_rate < self._slow_threshold:
            self._rates_reported = False
        elif state is _CLOSED:
            self._trip(failure_rate, slow_rate, now)
        elif not self._rates_reported:  # METRICS_ONLY: report each crossing once
            self._rates_reported = True
            self._queue_rates(failure_rate, slow_rate, now)

    def _judge_trial(self, failed: bool, slow: bool, now: float) -> None:
        self._trials_done += 1
        self._trials_failed += failed
        self._trials_slow += slow
        done = self._trials_done
        if done < self._trials:
            return
        failure_rate = self._trials_failed / done
        slow_rate = self._trials_slow / done
        if failure_rate >= self._fail_threshold or slow_rate >= self._slow_threshold:
            self._trip(failure_rate, slow_rate, now)
        else:
            self._close(now)

    def _queue_rates(self, failure_rate: float, slow_rate: float, now: float) -> None:
        if not self._listeners:
            return
        if failure_rate >= self._fail_threshold:
            self._pending.append(FailureRateExceeded(self._name, failure_rate, now))
        if slow_rate >= self._slow_threshold:
            self._pending.append(SlowCallRateExceeded(self._name, slow_rate, now))

    def _trip(self, failure_rate: float, slow_rate: float, now: float) -> None:
        self._queue_rates(failure_rate, slow_rate, now)
        self._open(now)

    def _open(self, now: float) -> None:
        config = self._config
        self._consecutive_opens += 1
        if self._consecutive_opens == 1:
            wait = config.wait_duration_open_s
        else:  # grown step by step: multiplier ** n would overflow a float
            wait = self._open_wait * config.wait_multiplier
        self._open_wait = min(wait, config.max_wait_duration_open_s)
        self._open_until = now + self._open_wait
        self._set_state(_OPEN, now)

    def _close(self, now: float) -> None:
        self._window.reset()
        self._consecutive_opens = 0
        self._set_state(_CLOSED, now)

    def _set_state(self, to: BreakerState, now: float) -> None:
        previous = self._state
        if to is _HALF_OPEN:
            self._trials_admitted = self._trials_done = 0
            self._trials_failed = self._trials_slow = 0
            self._judging_trials = True
        elif to is _CLOSED or to is _METRICS_ONLY:
            self._judging_trials = False
        # The state first, then the generation: the unlocked fast path reads
        # the generation first, so it never pairs CLOSED with a newer generation
        # than the one CLOSED belongs to.
        self._state = to
        self._gen += 1
        if self._listeners:
            self._pending.append(StateTransition(self._name, previous, to, now))

    # ----------------------------------------------------------------- events

    def _deliver(self) -> None:
        """Deliver queued events, in order, outside the state lock.

        One thread delivers at a time; a thread that finds another delivering
        leaves its events to it, and the deliverer checks the queue again after
        releasing, so no event is stranded.
        """
        pending = self._pending
        while pending:
            if not self._delivering.acquire(blocking=False):
                return
            try:
                while pending:
                    event = pending.popleft()
                    for listener in self._listeners:
                        try:
                            listener(event)
                        except Exception:  # a listener must never break the call path
                            logger.exception("breaker %s: listener failed on %r", self._name, event)
            finally:
                self._delivering.release()


# --------------------------------------------------------------------------- registry


class BreakerRegistry:
    """Named breakers, created once and shared (one per dependency).

    Args:
        clock: the clock of every breaker it creates.
        default_config: the config of a breaker created without one.
        listeners: added to every breaker it creates.
    """

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        default_config: BreakerConfig = _DEFAULT_CONFIG,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self._clock = clock
        self._default_config = default_config
        self._listeners = tuple(listeners)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker ``name``, created on first use (``config`` applies only then)."""
        breaker = self._breakers.get(name)  # a dict read is atomic: no lock once created
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(
                    name,
                    config if config is not None else self._default_config,
                    clock=self._clock,
                    listeners=self._listeners,
                )
                self._breakers[name] = breaker
            return breaker

    def get_existing(self, name: str) -> CircuitBreaker | None:
        """The breaker ``name`` if it exists, else None."""
        return self._breakers.get(name)

    def all(self) -> list[CircuitBreaker]:
        """Every breaker, in creation order."""
        with self._lock:
            return list(self._breakers.values())

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._breakers)
