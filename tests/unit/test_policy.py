"""The per-dependency policy: retry transient, fail fast when open, fall back, record events."""

from __future__ import annotations

import asyncio

import pytest

from biomem.resilience.breaker import BreakerConfig, BreakerState
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import (
    CircuitOpenError,
    DatabaseQueryError,
    DependencyError,
    LLMUnavailable,
)
from biomem.resilience.events import ErrorKind, ErrorLog
from biomem.resilience.policy import CallTimeoutError, Policy, PolicyConfig
from biomem.resilience.retry import RetryConfig


def make(clock: FakeClock, errors: ErrorLog | None = None, **overrides: object) -> Policy:
    config = PolicyConfig(
        breaker=BreakerConfig(window_size=10, minimum_calls=4, wait_duration_open_s=30),
        retry=RetryConfig(max_attempts=3, base_delay_s=0.1, max_delay_s=1.0, timeout_s=10),
        **overrides,  # type: ignore[arg-type]
    )
    return Policy("ollama", config, clock=clock, errors=errors)


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_transient_errors_are_retried_with_backoff() -> None:
    """A transient failure is retried after a jittered delay and the call then succeeds."""
    clock = FakeClock()
    fn = Flaky(2, LLMUnavailable("ollama", "503", status=503))
    assert make(clock).call(fn) == "ok"
    assert fn.calls == 3
    assert len(clock.sleeps) == 2 and all(0 <= s <= 1.0 for s in clock.sleeps)


def test_permanent_errors_are_not_retried() -> None:
    """A permanent error (a rejected query) is raised after one attempt."""
    clock = FakeClock()
    fn = Flaky(5, DatabaseQueryError("duckdb", "syntax error"))
    with pytest.raises(DatabaseQueryError):
        make(clock).call(fn)
    assert fn.calls == 1 and clock.sleeps == []


def test_open_breaker_fails_fast_into_the_fallback() -> None:
    """Once failures trip the breaker, calls are refused without reaching the dependency."""
    clock = FakeClock()
    errors = ErrorLog()
    policy = make(clock, errors)
    fn = Flaky(1000, LLMUnavailable("ollama", "down"))
    for _ in range(3):
        assert policy.call(fn, fallback=lambda exc: "fallback") == "fallback"
    assert policy.breaker.state is BreakerState.OPEN
    calls_when_open = fn.calls
    seen: list[DependencyError] = []
    assert policy.call(fn, fallback=lambda exc: seen.append(exc) or "fallback") == "fallback"
    assert fn.calls == calls_when_open  # refused at once
    assert isinstance(seen[0], CircuitOpenError)
    assert all(e.component == "ollama" for e in errors.recent())
    assert errors.counts()[("ollama", ErrorKind.SERVICE_UNAVAILABLE)] == calls_when_open


def test_bugs_are_never_swallowed_by_the_fallback() -> None:
    """An exception outside the dependency tree propagates even with a fallback."""
    policy = make(FakeClock())

    def bug() -> str:
        raise KeyError("programming error")

    with pytest.raises(KeyError):
        policy.call(bug, fallback=lambda exc: "fallback")


async def test_async_timeout_counts_as_failure() -> None:
    """An async attempt slower than the timeout fails as CallTimeoutError and is retried."""
    clock = FakeClock()
    policy = make(clock, timeout_s=0.05)
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return "late"

    with pytest.raises(Exception) as caught:
        await policy.acall(slow)
    assert isinstance(caught.value.__cause__ or caught.value, CallTimeoutError)
    assert calls == 3
    assert policy.breaker.metrics().failed_calls == 3


async def test_async_bulkhead_bounds_concurrency() -> None:
    """No more than max_concurrent async calls are inside the dependency at once."""
    policy = make(FakeClock(), max_concurrent=2)
    inside = 0
    peak = 0

    async def call() -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.01)
        inside -= 1
        return 1

    results = await asyncio.gather(*(policy.acall(call) for _ in range(8)))
    assert sum(results) == 8 and peak == 2
