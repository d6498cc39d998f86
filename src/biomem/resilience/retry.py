"""Retries with exponential backoff and jitter, bounded by attempts, a total timeout and a budget.

A :class:`Retrier` runs a call again when it fails with an error that ``on``
calls retryable, waiting a jittered, capped, exponentially growing delay
(the "Full Jitter" and "Decorrelated Jitter" formulas of AWS's *Exponential
Backoff And Jitter*). It gives up at the first of: a permanent error, the
last attempt, ``should_stop()`` (the dependency's breaker is open), a
refused :class:`~biomem.resilience.budget.RetryBudget` withdrawal, or a
delay that would end past the total timeout.

The success path costs one ``try`` and, with a budget, one deposit: the
clock is read only after a first failure, so the total timeout counts from
the first failure (the first attempt is bounded by the callee's own timeout).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, NoReturn, ParamSpec, Protocol, TypeAlias, TypeVar, cast

from biomem.resilience.budget import RetryBudget
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.errors import RetryExhaustedError

__all__ = [
    "GiveUpReason",
    "Retrier",
    "RetryConfig",
    "RetryEvent",
    "RetryGivenUp",
    "RetryListener",
    "RetryOn",
    "RetryPredicate",
    "RetryScheduled",
    "decorrelated_jitter",
    "full_jitter",
    "retry_if_transient",
]

P = ParamSpec("P")
T = TypeVar("T")

RetryPredicate: TypeAlias = Callable[[BaseException], bool | float | None]
"""False/None: do not retry; True: retry after the backoff; a float: retry after that many s."""

RetryOn: TypeAlias = type[BaseException] | tuple[type[BaseException], ...] | RetryPredicate

GiveUpReason: TypeAlias = Literal["exhausted", "budget", "stopped", "deadline", "permanent"]

_log = logging.getLogger(__name__)


# -- backoff formulas ---------------------------------------------------------------------------


def full_jitter(
    attempt: int, *, base_s: float, multiplier: float, cap_s: float, rng: random.Random
) -> float:
    """AWS "Full Jitter": ``uniform(0, min(cap_s, base_s * multiplier**attempt))``.

    ``attempt`` counts retries from 0 (the wait before the first retry).
    """
    try:
        ceiling = min(cap_s, base_s * multiplier**attempt)
    except OverflowError:  # multiplier**attempt beyond float range: the cap wins anyway
        ceiling = cap_s
    return rng.uniform(0.0, ceiling)


def decorrelated_jitter(
    previous_s: float, *, base_s: float, cap_s: float, rng: random.Random
) -> float:
    """AWS "Decorrelated Jitter": ``min(cap_s, uniform(base_s, previous_s * 3))``.

    Start with ``previous_s = base_s``. The upper bound never drops below
    ``base_s``, so the result stays within ``[min(base_s, cap_s), cap_s]``.
    """
    return min(cap_s, rng.uniform(base_s, max(base_s, previous_s * 3.0)))


# -- configuration ------------------------------------------------------------------------------


def retry_if_transient(exc: BaseException) -> bool | float | None:
    """The default ``on``: retry errors whose ``transient`` attribute is True.

    A ``retry_after`` attribute (seconds, > 0, e.g. from an HTTP Retry-After
    header) becomes the delay. A :class:`RetryExhaustedError` is never retried:
    retries happen at one layer, or nested retriers multiply the load.
    """
    if getattr(exc, "transient", False) is not True or isinstance(exc, RetryExhaustedError):
        return False
    after = getattr(exc, "retry_after", None)
    if (
        isinstance(after, int | float)
        and not isinstance(after, bool)
        and after > 0
        and math.isfinite(after)
    ):
        return float(after)
    return True


def _seconds(value: object, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        accepts = "seconds (float), a timedelta" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {accepts}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """How to retry; durations accept float seconds or a timedelta and are stored as floats.

    Only :class:`Exception` subclasses are ever retried: cancellation,
    ``KeyboardInterrupt`` and ``SystemExit`` always propagate.
    """

    max_attempts: int = 4
    """Total attempts, the first included (>= 1)."""
    base_delay_s: float | timedelta = 0.2
    """Scale of the first delay."""
    multiplier: float = 2.0
    """Growth of the delay ceiling per retry (full jitter), >= 1."""
    max_delay_s: float | timedelta = 10.0
    """The longest single wait, Retry-After included."""
    timeout_s: float | timedelta | None = 30.0
    """Total time allowed from the first failure: no wait ends, and no attempt starts, past it."""
    jitter: Literal["full", "decorrelated"] = "full"
    """Which AWS backoff formula to use."""
    on: RetryOn = retry_if_transient
    """Exception type(s) to retry, or a :data:`RetryPredicate`."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be >= 1 (the first attempt included), got {self.max_attempts}"
            )
        base = cast(float, _seconds(self.base_delay_s, "base_delay_s"))
        if not (math.isfinite(base) and base >= 0):
            raise ValueError(f"base_delay_s must be finite and >= 0, got {self.base_delay_s!r}")
        cap = cast(float, _seconds(self.max_delay_s, "max_delay_s"))
        if not (math.isfinite(cap) and cap >= base):
            raise ValueError(
                f"max_delay_s must be finite and >= base_delay_s ({base}), got {self.max_delay_s!r}"
            )
        timeout = _seconds(self.timeout_s, "timeout_s", optional=True)
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout_s must be finite and > 0, or None, got {self.timeout_s!r}")
        multiplier = cast(float, _seconds(self.multiplier, "multiplier"))
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise ValueError(f"multiplier must be finite and >= 1, got {self.multiplier!r}")
        if self.jitter not in ("full", "decorrelated"):
            raise ValueError(f"jitter must be 'full' or 'decorrelated', got {self.jitter!r}")
        _check_on(self.on)
        object.__setattr__(self, "base_delay_s", base)
        object.__setattr__(self, "max_delay_s", cap)
        object.__setattr__(self, "timeout_s", timeout)
        object.__setattr__(self, "multiplier", multiplier)


def _check_on(on: object) -> None:
    types = on if isinstance(on, tuple) else (on,) if isinstance(on, type) else None
    if types is None:
        if not callable(on):
            raise TypeError(f"on must be an exception type, a tuple of them or a predicate: {on!r}")
        return
    if not types:
        raise ValueError("on must name at least one exception type")
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise TypeError(
                f"on: {kind!r} is not an Exception subclass"
                " (cancellation and interrupts are never retried)"
            )


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """Attempt ``attempt`` (from 1) failed; attempt ``attempt + 1`` starts after ``delay_s``."""

    name: str
    attempt: int
    delay_s: float
    error_type: str
    """The class name of the error, e.g. ``"LLMUnavailable"``."""


@dataclass(frozen=True, slots=True)
class RetryGivenUp:
    """The retrier stopped after ``attempts`` attempts, for ``reason``."""

    name: str
    attempts: int
    reason: GiveUpReason
    error_type: str


RetryEvent: TypeAlias = RetryScheduled | RetryGivenUp


class RetryListener(Protocol):
    """Receives retry events (metrics, logs); an exception it raises is logged and ignored."""

    def __call__(self, event: RetryEvent, /) -> None: ...


# -- the retrier --------------------------------------------------------------------------------


class _Run:
    """Per-call state, created only after a first failure."""

    __slots__ = ("attempts", "deadline", "previous")

    def __init__(self, previous: float) -> None:
        self.attempts = 1
        self.deadline: float | None = None
        self.previous = previous  # the last computed delay, for decorrelated jitter


class Retrier:
    """Runs calls to one dependency again when they fail with a retryable error.

    Use ``call(fn, *a, **kw)``, ``await acall(coro_fn, *a, **kw)``, or the
    retrier as a decorator (sync or async, detected).

    Giving up:
      * not retryable by ``config.on``: the error propagates unchanged;
      * the last attempt failed: :class:`RetryExhaustedError` is raised from it;
      * ``should_stop()`` is True, the budget refuses, or the next wait would end
        past the total timeout: the *original* error is re-raised, so callers keep
        seeing what went wrong (``CircuitOpenError``, ``LLMUnavailable``) rather
        than a retry artefact; attempts were cut short, not exhausted.

    Args:
        config: the policy.
        name: the dependency's name, in events and in RetryExhaustedError.
        clock: waits and measures the total timeout.
        budget: shared by all calls to the dependency; each call deposits, each retry withdraws.
        rng: the random source of the jitter (seed it in tests).
        should_stop: consulted before each retry, e.g. ``lambda: breaker.state is OPEN``.
        listeners: receive :class:`RetryScheduled` and :class:`RetryGivenUp`.
    """

    __slots__ = (
        "_base_s",
        "_budget",
        "_cap_s",
        "_classify",
        "_clock",
        "_listeners",
        "_rng",
        "_should_stop",
        "_timeout_s",
        "config",
        "name",
    )

    def __init__(
        self,
        config: RetryConfig,
        *,
        name: str,
        clock: Clock = SYSTEM_CLOCK,
        budget: RetryBudget | None = None,
        rng: random.Random | None = None,
        should_stop: Callable[[], bool] | None = None,
        listeners: Iterable[RetryListener] = (),
    ) -> None:
        self.config = config
        self.name = name
        self._clock = clock
        self._budget = budget
        # Jitter needs spread, not secrecy: a seeded PRNG is right here.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._should_stop = should_stop
        self._listeners = tuple(listeners)
        # RetryConfig stores durations as float seconds; the casts only tell mypy.
        self._base_s = cast(float, config.base_delay_s)
        self._cap_s = cast(float, config.max_delay_s)
        self._timeout_s = cast(float | None, config.timeout_s)
        on = config.on
        if isinstance(on, type | tuple):
            kinds = on

            def is_kind(exc: BaseException) -> bool:
                return isinstance(exc, kinds)

            self._classify: RetryPredicate = is_kind
        else:
            self._classify = on

    def __repr__(self) -> str:
        return f"Retrier(name={self.name!r}, config={self.config!r})"

    def add_listener(self, listener: RetryListener) -> None:
        """Also send events to ``listener`` (e.g. a metrics counter wired after construction)."""
        # A new tuple, not an append: a retry running on another thread keeps
        # iterating the tuple it already read.
        self._listeners = (*self._listeners, listener)

    # The success path of call/acall/the wrappers is duplicated on purpose:
    # one try and no helper call keeps the overhead of a call that succeeds
    # at a few tens of nanoseconds. The retry loop starts outside the
    # ``except`` block so later errors are not chained to the first one.

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying as configured."""
        if self._budget is not None:
            self._budget.on_call()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - `on` decides, re-raises
            first = exc
        return self._retry(first, fn, args, kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying as configured; waits with ``clock.asleep``."""
        if self._budget is not None:
            self._budget.on_call()
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - `on` decides, re-raises
            first = exc
        return await self._aretry(first, fn, args, kwargs)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate ``fn`` (a function or a coroutine function) to retry as configured."""
        budget = self._budget
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def aretrying(*args: Any, **kwargs: Any) -> Any:
                if budget is not None:
                    budget.on_call()
                try:
                    return await afn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - `on` decides, re-raises
                    first = exc
                return await self._aretry(first, afn, args, kwargs)

            return cast(Callable[P, T], aretrying)

        @functools.wraps(fn)
        def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            if budget is not None:
                budget.on_call()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - `on` decides, re-raises
                first = exc
            return self._retry(first, fn, args, kwargs)

        return retrying

    def _retry(
        self, exc: Exception, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        run = _Run(self._base_s)
        sleep = self._clock.sleep
        while True:
            sleep(self._next_delay(exc, run))
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - `on` decides, re-raises
                exc = error
            run.attempts += 1

    async def _aretry(
        self,
        exc: Exception,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        run = _Run(self._base_s)
        asleep = self._clock.asleep
        while True:
            await asleep(self._next_delay(exc, run))
            try:
                return await fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - `on` decides, re-raises
                exc = error
            run.attempts += 1

    def _next_delay(self, exc: Exception, run: _Run) -> float:
        """The wait before the next attempt; raises (gives up) when there is none."""
        config = self.config
        verdict = self._classify(exc)
        if verdict is None or verdict is False:
            self._give_up(exc, run, "permanent")
        if run.attempts >= config.max_attempts:
            self._give_up(exc, run, "exhausted")
        if self._should_stop is not None and self._should_stop():
            self._give_up(exc, run, "stopped")

        cap = self._cap_s
        base = self._base_s
        if verdict is True or math.isnan(verdict):
            if config.jitter == "full":
                delay = full_jitter(
                    run.attempts - 1,
                    base_s=base,
                    multiplier=config.multiplier,
                    cap_s=cap,
                    rng=self._rng,
                )
            else:
                delay = run.previous = decorrelated_jitter(
                    run.previous, base_s=base, cap_s=cap, rng=self._rng
                )
        else:  # the predicate named the wait (Retry-After); still capped
            delay = min(max(float(verdict), 0.0), cap)

        timeout = self._timeout_s
        if timeout is not None:
            now = self._clock.monotonic()
            if run.deadline is None:
                run.deadline = now + timeout
            # An attempt that would start at or past the deadline is pointless:
            # give up now rather than sleep first.
            if now + delay >= run.deadline:
                self._give_up(exc, run, "deadline")

        # Last, so that a token is withdrawn only for a retry that happens.
        if self._budget is not None and not self._budget.try_retry():
            self._give_up(exc, run, "budget")

        if self._listeners:
            self._emit(RetryScheduled(self.name, run.attempts, delay, type(exc).__name__))
        return delay

    def _give_up(self, exc: Exception, run: _Run, reason: GiveUpReason) -> NoReturn:
        if self._listeners:
            self._emit(RetryGivenUp(self.name, run.attempts, reason, type(exc).__name__))
        if reason == "exhausted":
            raise RetryExhaustedError(
                dependency=self.name, attempts=run.attempts, last_error=exc
            ) from exc
        raise exc

    def _emit(self, event: RetryEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                # A broken metrics hook must not turn a retry into a failure.
                _log.warning("retry listener %r raised; ignored", listener, exc_info=True)
