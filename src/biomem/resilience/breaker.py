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

Layout: the state machine and its bookkeeping live in
:mod:`biomem.resilience._breaker_core`, ``call``/``acall``/the decorator in
:mod:`biomem.resilience._breaker_calls`; this module adds permits, ``with``
blocks, reading and manual control, and holds the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType
from typing import Self, TypeAlias

from biomem.resilience._breaker_calls import _BreakerCalls
from biomem.resilience._breaker_core import _DEFAULT_CONFIG, _FAILURE, _IGNORE
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
from biomem.resilience.clock import SYSTEM_CLOCK, Clock

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

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_DISABLED = BreakerState.DISABLED
_FORCED_OPEN = BreakerState.FORCED_OPEN
_METRICS_ONLY = BreakerState.METRICS_ONLY


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


class CircuitBreaker(_BreakerCalls):
    """A circuit breaker (see the module docstring for states and semantics).

    Args:
        name: names the breaker in errors, events and metrics.
        config: how calls are judged.
        clock: the time source (a FakeClock in tests).
        listeners: receive every event (see :meth:`add_listener`).
    """

    __slots__ = ()

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
            total, total_failed, total_slow = self._lifetime()
            ignored = self._ignored
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
            total_calls=total,
            total_failed_calls=total_failed,
            total_slow_calls=total_slow,
            total_ignored_calls=ignored,
        )

    def add_listener(self, listener: BreakerListener) -> None:
        """Send every later event to ``listener`` too."""
        with self._lock:
            # A new tuple, never mutated: delivery iterates it without the lock.
            self._listeners = (*self._listeners, listener)

    # ----------------------------------------------------------------- permits and with blocks
    #
    # call(), acall() and the decorator are inherited from _BreakerCalls.

    def acquire(self) -> Permit:
        """Ask to make one call; raise :class:`CircuitOpenError` at once if refused.

        Report the outcome on the returned :class:`Permit`.
        """
        now = self._mono()
        gen: int | None = self._gen
        if self._state is not _CLOSED:
            gen = self._admit(now)
        return Permit(self, gen, now)

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
        """Back to CLOSED with a fresh window, whatever the state; lifetime counts remain."""
        now = self._mono()
        with self._lock:
            if self._state is _CLOSED:
                self._gen += 1  # calls admitted before the reset do not count after it
                self._reset_window()
                self._consecutive_opens = 0
            else:
                self._close(now)
        self._deliver()


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
