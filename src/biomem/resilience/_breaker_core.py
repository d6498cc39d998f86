"""The circuit breaker's state machine: its state, window, trials, transitions and events.

:class:`_BreakerCore` admits calls outside the CLOSED fast path, classifies and
records outcomes, judges the window and the half-open trials, makes the
transitions and delivers the events. The ways to call through a breaker are
added on top of it (``_BreakerCalls`` in :mod:`biomem.resilience._breaker_calls`,
then :class:`~biomem.resilience.breaker.CircuitBreaker`, whose module docstring
states the semantics). Import the breaker from :mod:`biomem.resilience.breaker`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from biomem.resilience._breaker_model import (
    BreakerConfig,
    BreakerEvent,
    BreakerListener,
    BreakerState,
    CallNotPermitted,
    FailureRateExceeded,
    SlowCallRateExceeded,
    StateTransition,
)
from biomem.resilience._window import CountWindow, SlidingWindow, TimeWindow
from biomem.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from biomem.resilience.errors import CircuitOpenError

__all__ = ["_BreakerCore"]

# The breaker's records keep the public module's name, as before the split.
logger = logging.getLogger("biomem.resilience.breaker")

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_DISABLED = BreakerState.DISABLED
_METRICS_ONLY = BreakerState.METRICS_ONLY

_DEFAULT_CONFIG = BreakerConfig()

# How an exception counts (see the module docstring of biomem.resilience.breaker).
_SUCCESS, _FAILURE, _IGNORE = 0, 1, 2


class _BreakerCore:
    """The state and the bookkeeping of a :class:`CircuitBreaker`, which documents the args."""

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
        "_ignored",
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
        "_past_calls",
        "_past_failed",
        "_past_slow",
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
        # Lifetime totals, for counters that never go down. Outcomes still in
        # the window's totals are added when read (see ``_reset_window``), so
        # the CLOSED fast path pays nothing for them; the "past" ones are the
        # window's outcomes from before its last reset, the half-open trials
        # and the outcomes of calls that finished after a state change.
        self._past_calls = 0
        self._past_failed = 0
        self._past_slow = 0
        self._ignored = 0
        self._rates_reported = False  # METRICS_ONLY reports each crossing once
        self._listeners: tuple[BreakerListener, ...] = tuple(listeners)
        self._pending: deque[BreakerEvent] = deque()
        self._delivering = threading.Lock()

    # ----------------------------------------------------------------- transitions

    def _transition(self, to: BreakerState) -> None:
        """Move to ``to`` by hand (the ``transition_to_*`` methods); no-op if already there."""
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
                    self._reset_window()
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
        """An ignored call: count it, and free its half-open trial slot if it holds one."""
        # Under the lock, for the count: ignored calls are rare (cancellation,
        # ignore_exceptions), so this path is not worth a racy increment.
        with self._lock:
            self._ignored += 1
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
                # Admitted before a state change: stale, never judged, but a
                # call the dependency answered all the same.
                self._past_calls += 1
                self._past_failed += failed
                self._past_slow += slow
                return
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
            else:  # OPEN, FORCED_OPEN, DISABLED judge nothing; the call still counts
                self._past_calls += 1
                self._past_failed += failed
                self._past_slow += slow
                return
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
        self._past_calls += 1  # trials never enter the window: counted here
        self._past_failed += failed
        self._past_slow += slow
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

    def _reset_window(self) -> None:
        """Empty the window, its outcomes kept in the lifetime totals."""
        calls, failed, slow = self._window.totals()
        self._past_calls += calls
        self._past_failed += failed
        self._past_slow += slow
        self._window.reset()

    def _lifetime(self) -> tuple[int, int, int]:
        """``(calls, failed, slow)`` recorded since the breaker was created."""
        calls, failed, slow = self._window.totals()
        return self._past_calls + calls, self._past_failed + failed, self._past_slow + slow

    def _close(self, now: float) -> None:
        self._reset_window()
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
