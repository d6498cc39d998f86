"""The circuit breaker: windows, transitions, outcomes, events, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from biomem.resilience._window import CountWindow, TimeWindow
from biomem.resilience.breaker import (
    BreakerConfig,
    BreakerEvent,
    BreakerRegistry,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    FailureRateExceeded,
    Permit,
    SlowCallRateExceeded,
    StateTransition,
)
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import CircuitOpenError, ConfigurationError, DependencyError

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN

# Generous: only reached if the code under test is broken (a deadlock), never waited for.
TIMEOUT = 10.0


class Boom(Exception):
    """The dependency failed."""


def boom() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


class Recorder:
    """A listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[BreakerEvent] = []

    def __call__(self, event: BreakerEvent) -> None:
        self.events.append(event)

    def transitions(self) -> list[tuple[BreakerState, BreakerState]]:
        return [(e.from_state, e.to_state) for e in self.events if isinstance(e, StateTransition)]


def make(
    clock: FakeClock | None = None, **config: Any
) -> tuple[CircuitBreaker, FakeClock, Recorder]:
    """A breaker with a fake clock and a recording listener; small defaults."""
    clock = clock or FakeClock()
    options: dict[str, Any] = {
        "window_size": 10,
        "minimum_calls": 4,
        "wait_duration_open_s": 10.0,
        "permitted_calls_in_half_open": 3,
    }
    options.update(config)
    recorder = Recorder()
    breaker = CircuitBreaker("dep", BreakerConfig(**options), clock=clock, listeners=[recorder])
    return breaker, clock, recorder


def run(breaker: CircuitBreaker, *outcomes: str, clock: FakeClock | None = None) -> None:
    """Make one call per outcome: "ok", "fail", or "slow" (advances the clock 2 s inside)."""
    for outcome in outcomes:
        if outcome == "ok":
            breaker.call(ok)
        elif outcome == "fail":
            with pytest.raises(Boom):
                breaker.call(boom)
        else:
            assert clock is not None
            breaker.call(clock.advance, 2.0)


def trip(breaker: CircuitBreaker) -> None:
    """Open a breaker built by make() through its failure rate."""
    run(breaker, "fail", "fail", "fail", "fail")
    assert breaker.state is OPEN


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("window_type", "sliding", id="window-type"),
        pytest.param("window_size", 0, id="window-size-zero"),
        pytest.param("window_size", True, id="window-size-bool"),
        pytest.param("minimum_calls", -1, id="minimum-calls"),
        pytest.param("failure_rate_threshold", 0.0, id="failure-rate-zero"),
        pytest.param("failure_rate_threshold", 1.5, id="failure-rate-above-one"),
        pytest.param("slow_call_rate_threshold", float("nan"), id="slow-rate-nan"),
        pytest.param("slow_call_duration_s", 0, id="slow-duration-zero"),
        pytest.param("wait_duration_open_s", -1.0, id="wait-negative"),
        pytest.param("wait_duration_open_s", "30", id="wait-string"),
        pytest.param("wait_multiplier", 0.5, id="multiplier-below-one"),
        pytest.param("max_wait_duration_open_s", 1.0, id="max-wait-below-wait"),
        pytest.param("permitted_calls_in_half_open", 0, id="half-open-zero"),
        pytest.param("record_exceptions", [Exception], id="record-list"),
        pytest.param("ignore_exceptions", (int,), id="ignore-not-exception"),
        pytest.param("record_predicate", "yes", id="predicate-not-callable"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(field: str, value: object) -> None:
    """An invalid setting raises ConfigurationError naming BreakerConfig.<field>."""
    with pytest.raises(ConfigurationError) as caught:
        BreakerConfig(**{field: value})
    assert caught.value.variable == f"BreakerConfig.{field}"
    assert field in str(caught.value)


def test_config_normalises_timedeltas_to_seconds() -> None:
    """Durations given as timedelta are stored as float seconds."""
    config = BreakerConfig(
        slow_call_duration_s=timedelta(milliseconds=1500),
        wait_duration_open_s=timedelta(minutes=1),
        max_wait_duration_open_s=timedelta(minutes=5),
    )
    assert config.slow_call_duration_s == 1.5
    assert config.wait_duration_open_s == 60.0
    assert config.max_wait_duration_open_s == 300.0
    assert all(
        type(v) is float
        for v in (config.slow_call_duration_s, config.wait_duration_open_s, config.wait_multiplier)
    )


def test_minimum_calls_is_capped_at_a_count_windows_size() -> None:
    """A count window smaller than minimum_calls trips once it is full."""
    breaker, _, _ = make(window_size=3, minimum_calls=20)
    run(breaker, "fail", "fail", "fail")
    assert breaker.state is OPEN


# --------------------------------------------------------------------------- windows


def test_count_window_keeps_only_the_last_n_outcomes() -> None:
    """The count window forgets the outcome N calls back, and holds at most N in memory."""
    window = CountWindow(3)
    for failed in (True, True, False, False):
        window.record(failed, False, 0.0)
    assert window.snapshot(0.0) == (3, 1, 0)
    for _ in range(1000):
        window.record(True, True, 0.0)
    assert window.snapshot(0.0) == (3, 3, 3)
    assert len(window._bad) <= 3
    window.reset()
    assert window.snapshot(0.0) == (0, 0, 0)


def test_time_window_ages_out_whole_seconds() -> None:
    """A per-second bucket leaves the window exactly `size` seconds after its second began."""
    window = TimeWindow(10)
    window.record(True, False, 0.9)  # second 0
    window.record(False, True, 9.9)  # second 9
    assert window.snapshot(9.99) == (2, 1, 1)
    assert window.snapshot(10.0) == (1, 0, 1)  # second 0 is out
    window.record(False, False, 10.5)
    assert window.snapshot(19.99) == (1, 0, 0)
    assert window.snapshot(500.0) == (0, 0, 0)
    window.record(True, False, 500.0)
    window.reset()
    assert window.snapshot(500.0) == (0, 0, 0)


def test_count_window_says_when_rates_are_due() -> None:
    """Rates are due at the minimum and for bad outcomes past it, never for a plain success."""
    window = CountWindow(5, minimum=3)
    assert [window.record(f, False, 0.0) for f in (True, False, False, False)] == [
        False,
        False,
        True,
        False,
    ]
    assert window.record(False, True, 0.0) is True


def test_time_window_says_rates_are_due_after_aging() -> None:
    """Past the minimum a plain success is due only after aging, even aging seen by a snapshot."""
    window = TimeWindow(10, minimum=2)
    assert [window.record(False, False, 0.0) for _ in range(3)] == [False, True, False]
    window.record(True, False, 5.0)
    assert window.record(False, False, 6.0) is False
    window.snapshot(10.0)  # the three successes of second 0 age out here
    assert window.record(False, False, 10.0) is True
    assert window.record(False, False, 10.0) is False


def test_time_window_counts_a_late_record_in_the_newest_second() -> None:
    """A record whose time is behind the newest bucket (a thread race) is kept, not lost."""
    window = TimeWindow(5)
    window.record(False, False, 3.2)
    window.record(True, False, 2.9)
    assert window.snapshot(3.5) == (2, 1, 0)


# --------------------------------------------------------------------------- transitions


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        pytest.param(("fail", "fail", "fail"), CLOSED, id="below-minimum-calls"),
        pytest.param(("fail", "fail", "ok", "ok"), OPEN, id="rate-equal-to-threshold"),
        pytest.param(("fail", "ok", "ok", "ok"), CLOSED, id="rate-below-threshold"),
        pytest.param(("fail", "fail", "fail", "ok"), OPEN, id="success-reaching-minimum"),
        pytest.param(("ok",) * 8 + ("fail",) * 4, CLOSED, id="window-rate-below"),
        pytest.param(("ok",) * 6 + ("fail",) * 5, OPEN, id="window-rate-reached"),
    ],
)
def test_closed_opens_when_the_failure_rate_reaches_the_threshold(
    outcomes: tuple[str, ...], state: BreakerState
) -> None:
    """CLOSED opens once the window holds minimum_calls and failures ≥ the threshold."""
    breaker, _, _ = make()
    run(breaker, *outcomes)
    assert breaker.state is state


def test_old_failures_leave_the_count_window() -> None:
    """Failures older than the last window_size calls no longer count."""
    breaker, _, _ = make(window_size=4, minimum_calls=4, failure_rate_threshold=0.75)
    run(breaker, "fail", "fail", "ok", "ok", "ok", "fail", "ok")
    assert breaker.state is CLOSED
    assert breaker.metrics().failed_calls == 1


def test_time_window_forgets_failures_after_it_ages() -> None:
    """In a time window, failures older than window_size seconds stop counting."""
    breaker, clock, _ = make(window_type="time", window_size=10)
    run(breaker, "fail", "fail", "fail")
    clock.advance(10.0)
    run(breaker, "fail", "ok", "ok", "ok")
    assert breaker.state is CLOSED
    assert breaker.metrics().calls == 4
    clock.advance(10.0)
    assert breaker.metrics().calls == 0


def test_time_window_opens_on_failures_within_the_window() -> None:
    """In a time window, failures spread over less than window_size seconds trip it."""
    breaker, clock, _ = make(window_type="time", window_size=10)
    run(breaker, "fail", "fail", "fail")
    clock.advance(9.5)
    run(breaker, "ok")
    assert breaker.state is OPEN


def test_time_window_success_judges_a_rate_raised_by_aging() -> None:
    """Successes aging out of a time window raise the failure rate; a later success trips it."""
    breaker, clock, _ = make(
        window_type="time", window_size=10, minimum_calls=2, failure_rate_threshold=0.6
    )
    run(breaker, "ok", "ok", "ok")
    clock.advance(5.0)
    run(breaker, "fail", "fail", "fail")  # 3 of 6: below 0.6
    assert breaker.state is CLOSED
    clock.advance(5.0)  # the three successes age out
    run(breaker, "ok")  # 3 failures of 4 calls
    assert breaker.state is OPEN


def test_time_window_trips_on_aging_noticed_by_metrics() -> None:
    """Aging seen first by metrics() still lets the next success judge the risen rate."""
    breaker, clock, _ = make(
        window_type="time", window_size=10, minimum_calls=2, failure_rate_threshold=0.6
    )
    run(breaker, "ok", "ok", "ok")
    clock.advance(5.0)
    run(breaker, "fail", "fail", "fail")
    clock.advance(5.0)
    assert breaker.metrics().calls == 3  # the successes aged out in this snapshot
    run(breaker, "ok")
    assert breaker.state is OPEN


def test_slow_calls_open_the_breaker() -> None:
    """Calls at least slow_call_duration_s long count as slow and trip at their threshold."""
    breaker, clock, recorder = make(slow_call_duration_s=1.0, slow_call_rate_threshold=0.5)
    run(breaker, "ok", "slow", "ok", clock=clock)
    assert breaker.state is CLOSED
    run(breaker, "slow", clock=clock)
    assert breaker.state is OPEN
    assert breaker.metrics().slow_calls == 2
    rates = [e for e in recorder.events if isinstance(e, SlowCallRateExceeded)]
    assert [(e.name, e.rate) for e in rates] == [("dep", 0.5)]
    assert not any(isinstance(e, FailureRateExceeded) for e in recorder.events)


def test_open_refuses_at_once_with_the_time_left() -> None:
    """OPEN raises CircuitOpenError without calling, carrying the seconds until a trial."""
    breaker, clock, _ = make()
    trip(breaker)
    clock.advance(4.0)
    called = []
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(called.append, 1)
    assert called == []
    assert caught.value.name == "dep"
    assert caught.value.retry_after == pytest.approx(6.0)
    assert breaker.retry_after() == pytest.approx(6.0)
    assert breaker.metrics().not_permitted_calls == 1


def test_open_turns_half_open_on_the_first_acquire_after_the_wait() -> None:
    """No timer: the state stays OPEN until a call arrives after the wait."""
    breaker, clock, recorder = make()
    trip(breaker)
    clock.advance(10.0)
    assert breaker.state is OPEN
    assert breaker.retry_after() == 0.0
    breaker.acquire()
    assert breaker.state is HALF_OPEN
    assert recorder.transitions() == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_admits_exactly_the_permitted_trials() -> None:
    """HALF_OPEN admits permitted_calls_in_half_open trials and refuses the rest at once."""
    breaker, clock, _ = make(permitted_calls_in_half_open=3)
    trip(breaker)
    clock.advance(10.0)
    permits = [breaker.acquire() for _ in range(3)]
    for _ in range(2):
        with pytest.raises(CircuitOpenError) as caught:
            breaker.acquire()
        assert caught.value.retry_after == 0.0  # unknown: the trials are in flight
    assert breaker.metrics().not_permitted_calls == 2
    permits[0].ignore()  # an ignored trial frees its slot
    breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


@pytest.mark.parametrize(
    ("trials", "state"),
    [
        pytest.param(("ok", "ok", "ok"), CLOSED, id="all-succeed"),
        pytest.param(("fail", "ok", "ok"), CLOSED, id="one-of-three-fails"),
        pytest.param(("fail", "fail", "ok"), OPEN, id="two-of-three-fail"),
        pytest.param(("slow", "slow", "slow"), OPEN, id="all-slow"),
    ],
)
def test_trials_close_or_reopen_the_breaker(trials: tuple[str, ...], state: BreakerState) -> None:
    """When every trial is done, their rates decide: below both thresholds closes, else reopens."""
    breaker, clock, _ = make(slow_call_duration_s=1.0)
    trip(breaker)
    clock.advance(10.0)
    run(breaker, *trials[:-1], clock=clock)
    assert breaker.state is HALF_OPEN
    run(breaker, trials[-1], clock=clock)
    assert breaker.state is state


def test_closing_after_trials_starts_a_fresh_window() -> None:
    """HALF_OPEN → CLOSED resets the window and the consecutive-open count."""
    breaker, clock, _ = make()
    trip(breaker)
    clock.advance(10.0)
    run(breaker, "ok", "ok", "ok")
    metrics = breaker.metrics()
    assert (metrics.state, metrics.calls, metrics.consecutive_opens) == (CLOSED, 0, 0)
    assert metrics.failure_rate == -1.0


def test_open_wait_grows_by_the_multiplier_up_to_the_cap() -> None:
    """Each consecutive open waits wait × multiplier^(n-1), never more than the maximum."""
    breaker, clock, _ = make(
        wait_duration_open_s=10.0,
        wait_multiplier=2.0,
        max_wait_duration_open_s=35.0,
        permitted_calls_in_half_open=1,
    )
    trip(breaker)
    waits = [breaker.retry_after()]
    for _ in range(3):
        clock.advance(waits[-1])
        run(breaker, "fail")  # the single trial fails: reopen
        waits.append(breaker.retry_after())
    assert waits == [10.0, 20.0, 35.0, 35.0]
    assert breaker.metrics().consecutive_opens == 4
    clock.advance(35.0)
    run(breaker, "ok")
    trip(breaker)
    assert breaker.retry_after() == 10.0  # back to the base wait after closing


def test_open_wait_does_not_overflow_after_many_opens() -> None:
    """Hundreds of consecutive opens keep the wait at the cap (no float overflow)."""
    breaker, clock, _ = make(
        wait_multiplier=10.0, max_wait_duration_open_s=600.0, permitted_calls_in_half_open=1
    )
    trip(breaker)
    for _ in range(400):
        clock.advance(breaker.retry_after())
        run(breaker, "fail")
    assert breaker.retry_after() == 600.0


# --------------------------------------------------------------------------- outcomes


class Ignored(Exception):
    """Not the dependency's fault."""


class Transient(Exception):
    """A failure of the dependency, sometimes."""

    def __init__(self, retryable: bool) -> None:
        super().__init__(retryable)
        self.retryable = retryable


@pytest.mark.parametrize(
    ("config", "exc", "expected"),
    [
        pytest.param({}, Boom(), (1, 1), id="default-records-exceptions"),
        pytest.param({"ignore_exceptions": (Ignored,)}, Ignored(), (0, 0), id="ignored-type"),
        pytest.param(
            {"record_exceptions": (Boom,)}, ValueError(), (1, 0), id="unrecorded-type-is-success"
        ),
        pytest.param(
            {"record_exceptions": (Exception,), "ignore_exceptions": (Boom,)},
            Boom(),
            (0, 0),
            id="ignore-wins-over-record",
        ),
        pytest.param(
            {"record_predicate": lambda e: getattr(e, "retryable", False)},
            Transient(True),
            (1, 1),
            id="predicate-true",
        ),
        pytest.param(
            {"record_predicate": lambda e: getattr(e, "retryable", False)},
            Transient(False),
            (1, 0),
            id="predicate-false-is-success",
        ),
        pytest.param({}, KeyboardInterrupt(), (0, 0), id="base-exception-ignored"),
        pytest.param({}, asyncio.CancelledError(), (0, 0), id="cancellation-ignored"),
    ],
)
def test_exceptions_count_as_the_config_says(
    config: dict[str, Any], exc: BaseException, expected: tuple[int, int]
) -> None:
    """An exception counts as failure, success or nothing per record/ignore settings."""
    breaker, _, _ = make(**config)

    def raise_it() -> None:
        raise exc

    with pytest.raises(type(exc)):
        breaker.call(raise_it)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == expected


def test_a_raising_predicate_counts_a_failure_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A predicate that raises cannot lose the outcome: it counts as a failure."""

    def broken(value: object) -> bool:
        raise RuntimeError("bug")

    breaker, _, _ = make(record_predicate=broken, result_is_failure=broken)
    with pytest.raises(Boom):
        breaker.call(boom)
    assert breaker.call(ok) == "ok"
    assert breaker.metrics().failed_calls == 2
    assert "record_predicate raised" in caplog.text
    assert "result_is_failure raised" in caplog.text


def test_result_is_failure_counts_returned_values() -> None:
    """A returned value is a failure when result_is_failure says so, and is still returned."""
    breaker, _, _ = make(result_is_failure=lambda response: response == 503)
    assert [breaker.call(lambda s=s: s) for s in (503, 503, 200, 503)] == [503, 503, 200, 503]
    assert breaker.state is OPEN


def test_permit_api_reports_outcomes() -> None:
    """acquire() → success/failure/result/ignore records like call() does."""
    breaker, _, _ = make(
        minimum_calls=10, slow_call_duration_s=1.0, result_is_failure=lambda v: v is None
    )
    breaker.acquire().success()
    breaker.acquire().success(duration_s=timedelta(seconds=2))  # slow
    breaker.acquire().failure(Boom())
    breaker.acquire().failure()  # no exception: a plain failure
    breaker.acquire().failure(KeyboardInterrupt())  # ignored
    breaker.acquire().result(None)  # a failure by result_is_failure
    breaker.acquire().result("fine", duration_s=5.0)  # slow
    breaker.acquire().ignore()
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls, metrics.slow_calls) == (6, 3, 2)


def test_a_permit_counts_only_its_first_report() -> None:
    """Reporting a permit twice records it once."""
    breaker, _, _ = make()
    permit = breaker.acquire()
    permit.failure(Boom())
    permit.failure(Boom())
    permit.success()
    assert breaker.metrics().calls == 1


def test_permit_duration_defaults_to_time_since_acquire() -> None:
    """Without duration_s a permit measures its call on the breaker's clock."""
    breaker, clock, _ = make(slow_call_duration_s=3.0)
    permit = breaker.acquire()
    clock.advance(3.0)
    permit.success()
    assert breaker.metrics().slow_calls == 1


# --------------------------------------------------------------------------- generations


def test_a_call_admitted_while_closed_does_not_count_after_the_breaker_opened() -> None:
    """A stale permit from CLOSED reported after a trip changes nothing."""
    breaker, clock, _ = make()
    stale = breaker.acquire()
    trip(breaker)
    clock.advance(10.0)
    run(breaker, "ok")  # the first of three trials
    stale.failure(Boom())
    assert breaker.state is HALF_OPEN
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (1, 0)


def test_a_trial_from_an_earlier_half_open_round_does_not_count() -> None:
    """Trials of a reopened round, reported late, neither count nor free slots now."""
    breaker, clock, _ = make(permitted_calls_in_half_open=2)
    trip(breaker)
    clock.advance(10.0)
    late = breaker.acquire()
    ignored_late = breaker.acquire()
    breaker.transition_to_open()
    clock.advance(breaker.retry_after())
    current = [breaker.acquire(), breaker.acquire()]
    late.failure(Boom())
    ignored_late.ignore()  # must not free a slot of the new round
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    for permit in current:
        permit.success()
    assert breaker.state is CLOSED


def test_a_call_running_across_a_trip_is_dropped() -> None:
    """call(): an outcome arriving after the breaker changed state is not recorded."""
    breaker, _, _ = make()

    def trips_meanwhile() -> str:
        trip(breaker)
        return "done"

    assert breaker.call(trips_meanwhile) == "done"
    assert breaker.state is OPEN
    assert breaker.metrics().calls == 4


# --------------------------------------------------------------------------- manual states


def test_disabled_passes_every_call_and_records_and_emits_nothing() -> None:
    """DISABLED: calls pass whatever happens; no metrics move, no event is emitted."""
    breaker, _, recorder = make()
    breaker.transition_to_disabled()
    recorder.events.clear()
    for _ in range(20):
        with pytest.raises(Boom):
            breaker.call(boom)
    permit = breaker.acquire()
    permit.failure(Boom())
    with pytest.raises(Boom), breaker:
        boom()
    assert breaker.state is BreakerState.DISABLED
    assert breaker.metrics().calls == 0
    assert recorder.events == []


def test_forced_open_refuses_every_call_until_changed() -> None:
    """FORCED_OPEN refuses with an unknown retry time, however long one waits."""
    breaker, clock, _ = make()
    breaker.transition_to_forced_open()
    clock.advance(10_000.0)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(ok)
    assert caught.value.retry_after == 0.0
    assert breaker.state is BreakerState.FORCED_OPEN
    breaker.transition_to_closed()
    assert breaker.call(ok) == "ok"


def test_metrics_only_records_and_reports_but_never_trips() -> None:
    """METRICS_ONLY keeps counting and reports each threshold crossing once."""
    breaker, _, recorder = make()
    breaker.transition_to_metrics_only()
    run(breaker, *["fail"] * 8)
    assert breaker.state is BreakerState.METRICS_ONLY
    assert breaker.metrics().failure_rate == 1.0
    exceeded = [e for e in recorder.events if isinstance(e, FailureRateExceeded)]
    assert len(exceeded) == 1
    run(breaker, *["ok"] * 10, *["fail"] * 8)  # below, then above again
    exceeded = [e for e in recorder.events if isinstance(e, FailureRateExceeded)]
    assert len(exceeded) == 2


def test_reset_closes_with_a_fresh_window_and_keeps_refusal_counts() -> None:
    """reset() returns to CLOSED from any state; not_permitted_calls only ever grows."""
    breaker, _, _ = make()
    trip(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    breaker.reset()
    metrics = breaker.metrics()
    assert (metrics.state, metrics.calls, metrics.not_permitted_calls) == (CLOSED, 0, 1)
    run(breaker, "fail", "ok")
    stale = breaker.acquire()
    breaker.reset()  # in CLOSED too: earlier calls do not count after it
    stale.failure(Boom())
    assert breaker.metrics().calls == 0


def test_lifetime_totals_count_every_outcome_across_windows_and_states() -> None:
    """Totals never go down: window resets, trials, stale and ignored calls all count once."""
    breaker, clock, _ = make(slow_call_duration_s=1.0)
    run(breaker, "ok", "ok", "slow", "fail", "fail", "fail", clock=clock)
    assert breaker.state is OPEN  # 3 of 6 failed
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(10.0)
    run(breaker, "ok", "ok", "ok")  # three trials: the breaker closes, the window resets
    assert breaker.state is CLOSED
    assert breaker.metrics().calls == 0
    stale = breaker.acquire()
    breaker.reset()
    stale.failure(Boom())  # finished after the reset: not judged, still counted
    permit = breaker.acquire()
    permit.ignore()
    with pytest.raises(asyncio.CancelledError):
        breaker.call(lambda: (_ for _ in ()).throw(asyncio.CancelledError()))
    m = breaker.metrics()
    assert (m.total_calls, m.total_failed_calls, m.total_slow_calls) == (10, 4, 1)
    assert m.total_ignored_calls == 2
    assert m.not_permitted_calls == 1


def test_lifetime_totals_in_a_time_window_and_in_metrics_only() -> None:
    """A time window that ages out and a METRICS_ONLY switch lose no outcome from the totals."""
    breaker, clock, _ = make(window_type="time", window_size=5, minimum_calls=100)
    run(breaker, "ok", "fail")
    clock.advance(60.0)  # both aged out of the window
    run(breaker, "ok")
    breaker.transition_to_metrics_only()  # the window starts afresh
    run(breaker, "fail", "fail")
    m = breaker.metrics()
    assert (m.calls, m.failed_calls) == (2, 2)
    assert (m.total_calls, m.total_failed_calls) == (5, 3)


def test_disabled_adds_nothing_to_the_totals() -> None:
    """DISABLED records nothing, lifetime totals included."""
    breaker, _, _ = make()
    run(breaker, "ok")
    breaker.transition_to_disabled()
    run(breaker, "ok", "fail")
    breaker.acquire().ignore()
    m = breaker.metrics()
    assert (m.total_calls, m.total_failed_calls, m.total_ignored_calls) == (1, 0, 0)


def test_manual_transitions_emit_events_and_same_state_is_a_no_op() -> None:
    """Each manual change emits one StateTransition; asking for the current state does nothing."""
    breaker, _, recorder = make()
    breaker.transition_to_closed()
    breaker.transition_to_open()
    breaker.transition_to_open()
    breaker.transition_to_forced_open()
    breaker.transition_to_disabled()
    breaker.transition_to_metrics_only()
    breaker.transition_to_closed()
    assert recorder.transitions() == [
        (CLOSED, OPEN),
        (OPEN, BreakerState.FORCED_OPEN),
        (BreakerState.FORCED_OPEN, BreakerState.DISABLED),
        (BreakerState.DISABLED, BreakerState.METRICS_ONLY),
        (BreakerState.METRICS_ONLY, CLOSED),
    ]


# --------------------------------------------------------------------------- events


def test_a_trip_emits_the_rate_then_the_transition_then_refusals() -> None:
    """Events arrive in causal order with the clock's time."""
    breaker, clock, recorder = make()
    clock.advance(100.0)
    trip(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert recorder.events == [
        FailureRateExceeded("dep", 1.0, 100.0),
        StateTransition("dep", CLOSED, OPEN, 100.0),
        CallNotPermitted("dep", 100.0),
    ]


def test_a_failing_listener_is_logged_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises is logged; the call path and the other listeners go on."""
    breaker, _, recorder = make()

    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    later = Recorder()
    breaker.add_listener(broken)
    breaker.add_listener(later)
    with caplog.at_level(logging.ERROR):
        trip(breaker)
    assert breaker.state is OPEN
    assert later.events == recorder.events != []
    assert "listener failed" in caplog.text


def test_a_listener_may_call_back_into_the_breaker() -> None:
    """Listeners run outside the lock: one that reads or changes the breaker does not deadlock."""
    breaker, _, _ = make()
    seen: list[BreakerState] = []

    def reentrant(event: BreakerEvent) -> None:
        seen.append(breaker.metrics().state)
        if isinstance(event, StateTransition) and event.to_state is OPEN:
            breaker.transition_to_forced_open()

    breaker.add_listener(reentrant)
    run(breaker, "fail", "fail", "fail", "fail")
    assert breaker.state is BreakerState.FORCED_OPEN
    assert seen[-1] is BreakerState.FORCED_OPEN


# --------------------------------------------------------------------------- call styles


def call_sync(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    breaker.call(fn)


def call_decorated(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    breaker(fn)()


def call_with(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    with breaker:
        fn()


def call_async(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    async def afn() -> object:
        return fn()

    asyncio.run(breaker.acall(afn))


def call_async_decorated(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    @breaker
    async def afn() -> object:
        return fn()

    asyncio.run(afn())


def call_async_with(breaker: CircuitBreaker, fn: Callable[[], object]) -> None:
    async def block() -> None:
        async with breaker:
            fn()

    asyncio.run(block())


CALL_STYLES = [
    pytest.param(call_sync, id="call"),
    pytest.param(call_decorated, id="decorator"),
    pytest.param(call_with, id="with"),
    pytest.param(call_async, id="acall"),
    pytest.param(call_async_decorated, id="async-decorator"),
    pytest.param(call_async_with, id="async-with"),
]


@pytest.mark.parametrize("style", CALL_STYLES)
@pytest.mark.parametrize("window_type", ["count", "time"])
def test_every_call_style_records_trips_and_refuses(
    style: Callable[[CircuitBreaker, Callable[[], object]], None], window_type: str
) -> None:
    """Each way of calling counts outcomes alike: a success reaching the minimum trips it."""
    breaker, clock, _ = make(window_type=window_type, slow_call_duration_s=1.0)
    style(breaker, lambda: clock.advance(1.0))  # a slow success
    for _ in range(2):
        with pytest.raises(Boom):
            style(breaker, boom)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls, metrics.slow_calls) == (3, 2, 1)
    style(breaker, ok)  # the fourth call reaches the minimum: 2 of 4 failed
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        style(breaker, ok)
    clock.advance(10.0)
    style(breaker, ok)
    style(breaker, lambda: clock.advance(1.0))  # slow: 1 of 3 trials
    style(breaker, ok)
    assert breaker.state is CLOSED
    breaker.transition_to_disabled()
    style(breaker, ok)
    breaker.transition_to_metrics_only()
    style(breaker, ok)
    assert breaker.metrics().calls == 1


def test_decorator_wraps_sync_and_async_functions() -> None:
    """The decorator keeps the name and docstring and keeps async functions async."""
    breaker, _, _ = make()

    @breaker
    def fetch(x: int) -> int:
        """Fetch x."""
        return x * 2

    @breaker
    async def afetch(x: int) -> int:
        """Fetch x, asynchronously."""
        return x * 3

    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch x.")
    assert inspect.iscoroutinefunction(afetch)
    assert afetch.__name__ == "afetch"
    assert fetch(2) == 4
    assert asyncio.run(afetch(2)) == 6
    assert breaker.metrics().calls == 2


def test_decorated_calls_are_refused_when_open() -> None:
    """A decorated function is not called while the breaker is open."""
    breaker, _, _ = make()
    calls: list[int] = []

    @breaker
    def work() -> None:
        calls.append(1)

    @breaker
    async def awork() -> None:
        calls.append(2)

    trip(breaker)
    with pytest.raises(CircuitOpenError):
        work()
    with pytest.raises(CircuitOpenError):
        asyncio.run(awork())
    assert calls == []


def test_with_block_counts_its_outcome() -> None:
    """`with breaker:` counts a clean exit as success and a raised exception per config."""
    breaker, _, _ = make(minimum_calls=10)
    with breaker:
        pass
    with pytest.raises(Boom), breaker:
        boom()
    with breaker, breaker:  # nested on one breaker: two calls
        pass
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (4, 1)


def test_with_block_is_refused_when_open() -> None:
    """Entering `with breaker:` while open raises before the block runs."""
    breaker, _, _ = make()
    trip(breaker)
    entered = False
    with pytest.raises(CircuitOpenError), breaker:
        entered = True
    assert not entered


def test_circuit_open_error_is_a_dependency_error() -> None:
    """CircuitOpenError sits in the tree under DependencyError and says when to retry."""
    error = CircuitOpenError("ollama", 12.5)
    assert isinstance(error, DependencyError)
    assert (error.name, error.dependency, error.retry_after) == ("ollama", "ollama", 12.5)
    assert "retry in 12.5 s" in str(error)
    assert "unknown" in str(CircuitOpenError("ollama"))


# --------------------------------------------------------------------------- registry


def test_registry_creates_each_breaker_once() -> None:
    """get() returns one breaker per name, built from the config given at creation."""
    recorder = Recorder()
    registry = BreakerRegistry(clock=FakeClock(), listeners=[recorder])
    special = BreakerConfig(window_size=5, minimum_calls=5)
    first = registry.get("postgresql", special)
    assert registry.get("postgresql") is first
    assert registry.get("postgresql", BreakerConfig()) is first
    assert first.config is special
    assert registry.get("ollama").config == BreakerConfig()
    assert registry.get_existing("duckdb") is None
    assert [b.name for b in registry] == ["postgresql", "ollama"]
    assert registry.all() == list(registry)
    first.transition_to_open()
    assert recorder.transitions() == [(CLOSED, OPEN)]


def test_registry_get_is_safe_under_contention() -> None:
    """Threads racing to get one name all receive the same breaker."""
    registry = BreakerRegistry()
    barrier = threading.Barrier(8)
    got: list[CircuitBreaker] = []

    def worker() -> None:
        barrier.wait(TIMEOUT)
        got.append(registry.get("shared"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(got) == 8
    assert len({id(b) for b in got}) == 1


# --------------------------------------------------------------------------- model


WINDOW, MINIMUM, TRIALS = 5, 3, 2
WAIT, MULTIPLIER, MAX_WAIT, SLOW_S = 10.0, 2.0, 40.0, 1.0


class ReferenceModel:
    """The breaker's rules, written as plainly as possible over a list of outcomes.

    Each outcome is (second, failed, slow); the window is the last WINDOW
    outcomes, or those of the last WINDOW seconds. Rates are judged at every
    outcome, which the breaker's shortcuts must match.
    """

    def __init__(self, window_type: str) -> None:
        self.window_type = window_type
        self.state = CLOSED
        self.gen = 0
        self.outcomes: list[tuple[int, bool, bool]] = []
        self.trials: list[tuple[bool, bool]] = []
        self.show_trials = False
        self.admitted = 0
        self.opens = 0
        self.wait = 0.0
        self.open_until = 0.0
        self.refused = 0
        # Every reported outcome, judged or stale: (calls, failed, slow), and ignored ones.
        self.totals = (0, 0, 0)
        self.ignored = 0

    def _set(self, state: BreakerState) -> None:
        self.state = state
        self.gen += 1

    def _rates(self, outcomes: list[tuple[bool, bool]]) -> tuple[float, float]:
        return (
            sum(f for f, _ in outcomes) / len(outcomes),
            sum(s for _, s in outcomes) / len(outcomes),
        )

    def window(self, now: float) -> list[tuple[bool, bool]]:
        if self.window_type == "count":
            kept = self.outcomes[-WINDOW:]
        else:
            kept = [o for o in self.outcomes if o[0] > int(now) - WINDOW]
        return [(failed, slow) for _, failed, slow in kept]

    def _open(self, now: float) -> None:
        self.opens += 1
        self.wait = WAIT if self.opens == 1 else min(self.wait * MULTIPLIER, MAX_WAIT)
        self.open_until = now + self.wait
        self._set(OPEN)

    def admit(self, now: float) -> int | None:
        if self.state is OPEN and now >= self.open_until:
            self._set(HALF_OPEN)
            self.trials, self.admitted, self.show_trials = [], 0, True
        if self.state is CLOSED:
            return self.gen
        if self.state is HALF_OPEN and self.admitted < TRIALS:
            self.admitted += 1
            return self.gen
        self.refused += 1
        return None

    def retry_after(self, now: float) -> float:
        return max(0.0, self.open_until - now) if self.state is OPEN else 0.0

    def record(self, gen: int, failed: bool, slow: bool, now: float) -> None:
        calls, failures, slows = self.totals
        self.totals = (calls + 1, failures + failed, slows + slow)
        if gen != self.gen:
            return
        if self.state is CLOSED:
            self.outcomes.append((int(now), failed, slow))
            window = self.window(now)
            if len(window) >= MINIMUM:
                failure_rate, slow_rate = self._rates(window)
                if failure_rate >= 0.5 or slow_rate >= 0.5:
                    self._open(now)
        elif self.state is HALF_OPEN:
            self.trials.append((failed, slow))
            if len(self.trials) == TRIALS:
                failure_rate, slow_rate = self._rates(self.trials)
                if failure_rate >= 0.5 or slow_rate >= 0.5:
                    self._open(now)
                else:
                    self.outcomes, self.opens, self.show_trials = [], 0, False
                    self._set(CLOSED)

    def release(self, gen: int) -> None:
        self.ignored += 1
        if gen == self.gen and self.state is HALF_OPEN:
            self.admitted -= 1

    def counts(self, now: float) -> tuple[int, int, int]:
        shown = self.trials if self.show_trials else self.window(now)
        return len(shown), sum(f for f, _ in shown), sum(s for _, s in shown)


class BreakerMatchesModel(RuleBasedStateMachine):
    """Random call sequences leave the breaker exactly where the reference model is."""

    window_type: Literal["count", "time"] = "count"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(
            "model",
            BreakerConfig(
                window_type=self.window_type,
                window_size=WINDOW,
                minimum_calls=MINIMUM,
                failure_rate_threshold=0.5,
                slow_call_rate_threshold=0.5,
                slow_call_duration_s=SLOW_S,
                wait_duration_open_s=WAIT,
                wait_multiplier=MULTIPLIER,
                max_wait_duration_open_s=MAX_WAIT,
                permitted_calls_in_half_open=TRIALS,
            ),
            clock=self.clock,
        )
        self.model = ReferenceModel(self.window_type)
        self.held: list[tuple[Permit, int]] = []

    def _call(self, fn: Callable[[], object], failed: bool, slow: bool) -> None:
        start = self.clock.monotonic()
        gen = self.model.admit(start)
        if gen is None:
            with pytest.raises(CircuitOpenError) as caught:
                self.breaker.call(fn)
            assert caught.value.retry_after == self.model.retry_after(start)
            return
        if failed:
            with pytest.raises(Boom):
                self.breaker.call(fn)
        else:
            self.breaker.call(fn)
        self.model.record(gen, failed, slow, self.clock.monotonic())

    @rule(times=st.integers(1, 4))
    def success(self, times: int) -> None:
        for _ in range(times):
            self._call(ok, failed=False, slow=False)

    @rule(times=st.integers(1, 4))
    def failure(self, times: int) -> None:
        for _ in range(times):
            self._call(boom, failed=True, slow=False)

    @rule()
    def slow_success(self) -> None:
        self._call(lambda: self.clock.advance(SLOW_S), failed=False, slow=True)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.0, 5.0, 10.0, 25.0]))
    def advance_time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def acquire(self) -> None:
        now = self.clock.monotonic()
        gen = self.model.admit(now)
        if gen is None:
            with pytest.raises(CircuitOpenError):
                self.breaker.acquire()
        else:
            self.held.append((self.breaker.acquire(), gen))

    @precondition(lambda self: self.held)
    @rule(how=st.sampled_from(["success", "failure", "slow", "ignore"]))
    def report_held(self, how: str) -> None:
        permit, gen = self.held.pop(0)
        now = self.clock.monotonic()
        if how == "ignore":
            permit.ignore()
            self.model.release(gen)
        elif how == "failure":
            permit.failure(Boom(), duration_s=0.0)
            self.model.record(gen, True, False, now)
        else:
            slow = how == "slow"
            permit.success(duration_s=SLOW_S if slow else 0.0)
            self.model.record(gen, False, slow, now)

    @invariant()
    def same_state(self) -> None:
        metrics = self.breaker.metrics()
        assert metrics.state is self.model.state
        now = self.clock.monotonic()
        counts = (metrics.calls, metrics.failed_calls, metrics.slow_calls)
        assert counts == self.model.counts(now)
        assert metrics.not_permitted_calls == self.model.refused
        totals = (metrics.total_calls, metrics.total_failed_calls, metrics.total_slow_calls)
        assert totals == self.model.totals
        assert metrics.total_ignored_calls == self.model.ignored
        assert metrics.consecutive_opens == self.model.opens
        assert self.breaker.retry_after() == self.model.retry_after(now)


class TimeWindowBreakerMatchesModel(BreakerMatchesModel):
    """The same, with a time window of WINDOW seconds."""

    window_type = "time"


MODEL_SETTINGS = settings(max_examples=75, stateful_step_count=40, deadline=None)
BreakerMatchesModel.TestCase.settings = MODEL_SETTINGS
TimeWindowBreakerMatchesModel.TestCase.settings = MODEL_SETTINGS
test_breaker_matches_the_reference_model = BreakerMatchesModel.TestCase
test_time_window_breaker_matches_the_reference_model = TimeWindowBreakerMatchesModel.TestCase


# --------------------------------------------------------------------------- concurrency


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than usual, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("fast_switching")
def test_sixteen_threads_lose_no_outcome() -> None:
    """16 threads × 200 calls through one breaker: every call and failure is counted."""
    breaker = CircuitBreaker(
        "shared", BreakerConfig(window_size=5000, minimum_calls=5000), clock=FakeClock()
    )
    barrier = threading.Barrier(16)
    finished: list[int] = []

    def worker() -> None:
        barrier.wait(TIMEOUT)
        for i in range(200):
            with contextlib.suppress(Boom):
                breaker.call(boom if i % 4 == 0 else ok)
        finished.append(1)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(finished) == 16
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (3200, 800)
    assert (metrics.total_calls, metrics.total_failed_calls) == (3200, 800)


@pytest.mark.usefixtures("fast_switching")
def test_half_open_admits_exactly_n_of_twenty_concurrent_callers() -> None:
    """20 threads call at once in HALF_OPEN (N=3): 3 run the call, 17 are refused at once."""
    breaker, clock, _ = make(permitted_calls_in_half_open=3)
    trip(breaker)
    clock.advance(10.0)
    start = threading.Barrier(20)
    release = threading.Event()
    settled = threading.Semaphore(0)
    inside: list[int] = []
    refused: list[float] = []

    def blocked() -> str:
        inside.append(1)
        settled.release()
        release.wait(TIMEOUT)  # admitted calls stay inside the breaker
        return "ok"

    def worker() -> None:
        start.wait(TIMEOUT)
        try:
            breaker.call(blocked)
        except CircuitOpenError as exc:
            refused.append(exc.retry_after)
            settled.release()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for _ in range(20):
        assert settled.acquire(timeout=TIMEOUT)
    assert (len(inside), len(refused)) == (3, 17)
    assert set(refused) == {0.0}
    release.set()
    for t in threads:
        t.join(TIMEOUT)
    assert breaker.state is CLOSED


def test_the_lock_is_not_held_while_the_call_runs() -> None:
    """While one call is blocked inside the breaker, another thread acquires, calls and trips it."""
    breaker, clock, _ = make(permitted_calls_in_half_open=2)
    entered, release = threading.Event(), threading.Event()

    def blocked() -> str:
        entered.set()
        release.wait(TIMEOUT)
        return "late"

    def other_thread() -> None:
        breaker.acquire().success()
        breaker.call(ok)
        breaker.metrics()
        breaker.transition_to_open()

    holder = threading.Thread(target=breaker.call, args=(blocked,))
    holder.start()
    assert entered.wait(TIMEOUT)
    other = threading.Thread(target=other_thread)
    other.start()
    other.join(TIMEOUT)
    assert not other.is_alive()
    assert breaker.state is OPEN

    # In HALF_OPEN, acquire() takes the lock: a trial blocked inside must not stop it.
    clock.advance(10.0)
    entered.clear()
    trial = threading.Thread(target=breaker.call, args=(blocked,))
    trial.start()
    assert entered.wait(TIMEOUT)
    got: list[Permit] = []
    second = threading.Thread(target=lambda: got.append(breaker.acquire()))
    second.start()
    second.join(TIMEOUT)
    assert len(got) == 1
    release.set()
    holder.join(TIMEOUT)
    trial.join(TIMEOUT)
    got[0].success()
    assert breaker.state is CLOSED  # the CLOSED-era "late" call did not count


async def test_fifty_tasks_through_acall() -> None:
    """50 tasks inside acall at once: every outcome counted, no lock held across awaits."""
    breaker, _, _ = make(window_size=100, minimum_calls=100)
    gate, all_in = asyncio.Event(), asyncio.Event()
    entered = 0

    async def work(i: int) -> int:
        nonlocal entered
        entered += 1
        if entered == 50:
            all_in.set()
        await gate.wait()
        if i % 5 == 0:
            raise Boom(i)
        return i

    tasks = [asyncio.create_task(breaker.acall(work, i)) for i in range(50)]
    await asyncio.wait_for(all_in.wait(), TIMEOUT)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, Boom) for r in results) == 10
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (50, 10)


async def test_fifty_tasks_through_async_with() -> None:
    """50 tasks inside `async with breaker:` at once each count their own outcome."""
    breaker, _, _ = make(window_size=100, minimum_calls=100)
    gate, all_in = asyncio.Event(), asyncio.Event()
    entered = 0

    async def work(i: int) -> None:
        nonlocal entered
        async with breaker:
            entered += 1
            if entered == 50:
                all_in.set()
            await gate.wait()
            if i % 5 == 0:
                raise Boom(i)

    tasks = [asyncio.create_task(work(i)) for i in range(50)]
    await asyncio.wait_for(all_in.wait(), TIMEOUT)
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (50, 10)


async def test_a_cancelled_trial_frees_its_slot() -> None:
    """Cancelling a half-open trial in acall counts nothing and lets another trial in."""
    breaker, clock, _ = make(permitted_calls_in_half_open=1)
    trip(breaker)
    clock.advance(10.0)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fine() -> str:
        return "ok"

    task = asyncio.create_task(breaker.acall(hang))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(fine)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.acall(fine) == "ok"
    assert breaker.state is CLOSED
