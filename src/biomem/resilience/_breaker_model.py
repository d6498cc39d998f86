"""The circuit breaker's vocabulary: its states, its configuration and the events it emits.

Import these names from :mod:`biomem.resilience.breaker`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from biomem.resilience.errors import ConfigurationError

__all__ = [
    "BreakerConfig",
    "BreakerEvent",
    "BreakerListener",
    "BreakerMetrics",
    "BreakerState",
    "CallNotPermitted",
    "FailureRateExceeded",
    "SlowCallRateExceeded",
    "StateTransition",
]


class BreakerState(Enum):
    """Where a breaker stands; the last three are only ever set by hand."""

    CLOSED = "closed"  # calls pass; outcomes fill the sliding window
    OPEN = "open"  # calls are refused until the open wait has passed
    HALF_OPEN = "half_open"  # a fixed number of trial calls decide: close or reopen
    DISABLED = "disabled"  # calls pass; nothing is recorded, nothing is emitted
    FORCED_OPEN = "forced_open"  # calls are refused until someone changes the state
    METRICS_ONLY = "metrics_only"  # calls pass and are recorded; the breaker never trips


# --------------------------------------------------------------------------- config


def _invalid(name: str, accepts: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"BreakerConfig.{name}", accepts, detail=f"got {value!r}")


def _seconds(name: str, value: object, *, positive: bool = False) -> float:
    """Normalise a duration given as float seconds or ``timedelta``."""
    accepts = f"seconds {'> 0' if positive else '≥ 0'} (a number or a timedelta)"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise _invalid(name, accepts, value)
    if math.isnan(seconds) or seconds < 0 or (positive and seconds == 0):
        raise _invalid(name, accepts, value)
    return seconds


def _count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid(name, "an integer ≥ 1", value)
    return value


def _rate(name: str, value: object) -> float:
    accepts = "a fraction in (0, 1]"
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise _invalid(name, accepts, value)
    return float(value)


def _exception_types(name: str, value: object) -> tuple[type[BaseException], ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        raise _invalid(name, "a tuple of exception classes", value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """How a breaker judges calls; frozen, validated on construction.

    Durations accept float seconds or a ``timedelta`` and are stored as float
    seconds. An invalid value raises :class:`ConfigurationError` naming the field.

    Attributes:
        window_type: ``"count"`` (the last ``window_size`` calls) or ``"time"``
            (the calls of the last ``window_size`` seconds).
        window_size: calls for a count window, whole seconds for a time window.
        minimum_calls: calls the window must hold before rates are judged
            (capped at ``window_size`` for a count window, as a full window
            is all it can ever hold).
        failure_rate_threshold: failures / calls at or above which the breaker
            opens, in (0, 1].
        slow_call_rate_threshold: slow calls / calls at or above which it opens,
            in (0, 1]; 1.0 trips only when every call is slow.
        slow_call_duration_s: a call lasting at least this long is slow.
        wait_duration_open_s: how long OPEN refuses calls before a trial.
        wait_multiplier: ≥ 1; each further consecutive open multiplies the wait.
        max_wait_duration_open_s: the cap on the grown wait.
        permitted_calls_in_half_open: trial calls admitted in HALF_OPEN.
        record_exceptions: exception types that count as failures.
        ignore_exceptions: exception types that count neither way (checked first).
        record_predicate: refines ``record_exceptions``: a recorded type counts
            as a failure only when this returns True.
        result_is_failure: a returned value counts as a failure when this
            returns True (e.g. an HTTP 503 response).
    """

    window_type: Literal["count", "time"] = "count"
    window_size: int = 100
    minimum_calls: int = 20
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration_s: float = 60.0
    wait_duration_open_s: float = 30.0
    wait_multiplier: float = 1.0
    max_wait_duration_open_s: float = 600.0
    permitted_calls_in_half_open: int = 3
    record_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore_exceptions: tuple[type[BaseException], ...] = ()
    record_predicate: Callable[[BaseException], bool] | None = None
    result_is_failure: Callable[[Any], bool] | None = None

    if TYPE_CHECKING:
        # The generated __init__ at run time takes the same keywords; this
        # signature only tells type checkers that durations may be timedeltas
        # while the stored fields are always float seconds.
        def __init__(
            self,
            *,
            window_type: Literal["count", "time"] = "count",
            window_size: int = 100,
            minimum_calls: int = 20,
            failure_rate_threshold: float = 0.5,
            slow_call_rate_threshold: float = 1.0,
            slow_call_duration_s: float | timedelta = 60.0,
            wait_duration_open_s: float | timedelta = 30.0,
            wait_multiplier: float = 1.0,
            max_wait_duration_open_s: float | timedelta = 600.0,
            permitted_calls_in_half_open: int = 3,
            record_exceptions: tuple[type[BaseException], ...] = (Exception,),
            ignore_exceptions: tuple[type[BaseException], ...] = (),
            record_predicate: Callable[[BaseException], bool] | None = None,
            result_is_failure: Callable[[Any], bool] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        # object.__setattr__: the instance is frozen; normalising is part of construction.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.window_type not in ("count", "time"):
            raise _invalid("window_type", '"count" or "time"', self.window_type)
        _count("window_size", self.window_size)
        _count("minimum_calls", self.minimum_calls)
        _count("permitted_calls_in_half_open", self.permitted_calls_in_half_open)
        put("failure_rate_threshold", _rate("failure_rate_threshold", self.failure_rate_threshold))
        put(
            "slow_call_rate_threshold",
            _rate("slow_call_rate_threshold", self.slow_call_rate_threshold),
        )
        put(
            "slow_call_duration_s",
            _seconds("slow_call_duration_s", self.slow_call_duration_s, positive=True),
        )
        put("wait_duration_open_s", _seconds("wait_duration_open_s", self.wait_duration_open_s))
        put(
            "max_wait_duration_open_s",
            _seconds("max_wait_duration_open_s", self.max_wait_duration_open_s),
        )
        multiplier = self.wait_multiplier
        if (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or not 1 <= multiplier < math.inf
        ):
            raise _invalid("wait_multiplier", "a finite number ≥ 1", multiplier)
        put("wait_multiplier", float(multiplier))
        if self.max_wait_duration_open_s < self.wait_duration_open_s:
            raise ConfigurationError(
                "BreakerConfig.max_wait_duration_open_s",
                f"seconds ≥ wait_duration_open_s ({self.wait_duration_open_s})",
                detail=f"got {self.max_wait_duration_open_s!r}",
            )
        _exception_types("record_exceptions", self.record_exceptions)
        _exception_types("ignore_exceptions", self.ignore_exceptions)
        for name in ("record_predicate", "result_is_failure"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise _invalid(name, "a callable or None", value)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StateTransition:
    """The breaker ``name`` went from one state to another at ``at`` (clock seconds)."""

    name: str
    from_state: BreakerState
    to_state: BreakerState
    at: float


@dataclass(frozen=True, slots=True)
class FailureRateExceeded:
    """The failure rate reached the threshold (the breaker opens, unless METRICS_ONLY)."""

    name: str
    rate: float
    at: float


@dataclass(frozen=True, slots=True)
class SlowCallRateExceeded:
    """The slow-call rate reached the threshold (the breaker opens, unless METRICS_ONLY)."""

    name: str
    rate: float
    at: float


@dataclass(frozen=True, slots=True)
class CallNotPermitted:
    """A call was refused at ``at``."""

    name: str
    at: float


BreakerEvent: TypeAlias = (
    StateTransition | FailureRateExceeded | SlowCallRateExceeded | CallNotPermitted
)


class BreakerListener(Protocol):
    """Receives every event of a breaker; should be quick, must not rely on raising."""

    def __call__(self, event: BreakerEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A breaker's numbers at one moment.

    In HALF_OPEN, and in the OPEN that failed trials lead to, the counts are
    the trials'; otherwise the sliding window's (kept as they were while
    OPEN, FORCED_OPEN or DISABLED).

    Attributes:
        state: the state.
        failure_rate: failed / calls, or -1 below the minimum number of calls.
        slow_call_rate: slow / calls, or -1 below the minimum number of calls.
        calls: calls in the window.
        failed_calls: failed calls in the window.
        slow_calls: slow calls in the window.
        not_permitted_calls: calls refused since the breaker was created.
        consecutive_opens: opens since the breaker was last closed.
        total_calls: outcomes recorded since the breaker was created (window,
            half-open trials, and calls that finished after a state change);
            never goes down. DISABLED records none.
        total_failed_calls: those that failed.
        total_slow_calls: those that were slow (failed or not).
        total_ignored_calls: calls whose outcome counted neither way.
    """

    state: BreakerState
    failure_rate: float
    slow_call_rate: float
    calls: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int
    consecutive_opens: int
    total_calls: int = 0
    total_failed_calls: int = 0
    total_slow_calls: int = 0
    total_ignored_calls: int = 0
