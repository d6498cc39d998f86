"""Retry: jittered capped backoff, attempts, total timeout, budget, stop signal and events."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomem.resilience.budget import RetryBudget
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import (
    DatabaseQueryError,
    DependencyError,
    InputError,
    LLMUnavailable,
    RetryExhaustedError,
)
from biomem.resilience.retry import (
    Retrier,
    RetryConfig,
    RetryEvent,
    RetryGivenUp,
    RetryScheduled,
    decorrelated_jitter,
    full_jitter,
    retry_if_transient,
)


class Script:
    """A dependency call that fails ``failures`` times, each attempt costing ``cost_s``."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        failures: int = 10**9,
        error: Callable[[], Exception] = lambda: LLMUnavailable("ollama", "down"),
        cost_s: float = 0.0,
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.error = error
        self.cost_s = cost_s
        self.starts: list[float] = []
        self.raised: list[Exception] = []

    def __call__(self) -> str:
        self.starts.append(self.clock.monotonic())
        self.clock.advance(self.cost_s)
        if len(self.starts) <= self.failures:
            exc = self.error()
            self.raised.append(exc)
            raise exc
        return "ok"

    async def coro(self) -> str:
        await asyncio.sleep(0)
        return self()


def retrier(clock: FakeClock, seed: int = 0, **kwargs: Any) -> Retrier:
    """A retrier named ``ollama`` on a fake clock with a seeded jitter."""
    return Retrier(
        kwargs.pop("config", RetryConfig()),
        name="ollama",
        clock=clock,
        rng=random.Random(seed),
        **kwargs,
    )


# -- backoff formulas ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(0, 2000),
    base=st.floats(0, 5),
    multiplier=st.floats(1, 4),
    extra_cap=st.floats(0, 100),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_within_its_ceiling(
    attempt: int, base: float, multiplier: float, extra_cap: float, seed: int
) -> None:
    """Full jitter lies in [0, min(cap, base·multiplier^attempt)], even when the power overflows."""
    cap = base + extra_cap
    try:
        ceiling = min(cap, base * multiplier**attempt)
    except OverflowError:
        ceiling = cap
    delay = full_jitter(
        attempt, base_s=base, multiplier=multiplier, cap_s=cap, rng=random.Random(seed)
    )
    assert 0.0 <= delay <= ceiling


@settings(max_examples=300, deadline=None)
@given(
    previous=st.floats(0, 1000),
    base=st.floats(0, 5),
    extra_cap=st.floats(0, 100),
    seed=st.integers(0, 2**32),
)
def test_decorrelated_jitter_stays_within_its_bounds(
    previous: float, base: float, extra_cap: float, seed: int
) -> None:
    """Decorrelated jitter lies in [base, min(cap, max(base, 3·previous))]."""
    cap = base + extra_cap
    delay = decorrelated_jitter(previous, base_s=base, cap_s=cap, rng=random.Random(seed))
    assert base <= delay <= min(cap, max(base, previous * 3))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), jitter=st.sampled_from(["full", "decorrelated"]))
def test_every_wait_is_capped_by_max_delay(
    seed: int, jitter: Literal["full", "decorrelated"]
) -> None:
    """However many retries, no wait exceeds max_delay_s (nor, for full jitter, its ceiling)."""
    clock = FakeClock()
    config = RetryConfig(
        max_attempts=30, base_delay_s=0.5, max_delay_s=4.0, timeout_s=None, jitter=jitter
    )
    with pytest.raises(RetryExhaustedError):
        retrier(clock, seed, config=config).call(Script(clock))
    assert len(clock.sleeps) == 29
    assert all(0.0 <= s <= 4.0 for s in clock.sleeps)
    if jitter == "full":
        assert all(s <= min(4.0, 0.5 * 2**k) for k, s in enumerate(clock.sleeps))
    else:
        assert all(s >= 0.5 for s in clock.sleeps)


# -- attempts, permanent errors, `on` -----------------------------------------------------------


def test_success_after_failures_returns_the_value() -> None:
    """A call that fails twice then succeeds returns its value after two waits."""
    clock = FakeClock()
    script = Script(clock, failures=2)
    assert retrier(clock).call(script) == "ok"
    assert len(script.starts) == 3 and len(clock.sleeps) == 2


def test_exhausted_attempts_raise_retry_exhausted_from_the_last_error() -> None:
    """After max_attempts failures the retrier raises RetryExhaustedError from the last one."""
    clock = FakeClock()
    script = Script(clock)
    with pytest.raises(RetryExhaustedError) as info:
        retrier(clock, config=RetryConfig(max_attempts=3)).call(script)
    assert len(script.starts) == 3
    assert info.value.attempts == 3
    assert info.value.dependency == "ollama"
    assert info.value.last_error is script.raised[-1]
    assert info.value.__cause__ is script.raised[-1]
    assert str(info.value) == "ollama: gave up after 3 attempts (last: LLMUnavailable)"


def test_exhausted_message_never_carries_the_last_errors_text() -> None:
    """The last error's text may hold a secret: only its type is named."""
    last = DependencyError("postgresql", "postgresql://u:s3cr3t@db/x refused")
    exc = RetryExhaustedError(dependency="postgresql", attempts=1, last_error=last)
    assert "s3cr3t" not in str(exc) and "1 attempt " in str(exc)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: DatabaseQueryError("postgresql", "syntax"), id="transient-false"),
        pytest.param(lambda: InputError("bad record"), id="input-error"),
        pytest.param(lambda: ValueError("bug"), id="foreign-error"),
        pytest.param(
            lambda: RetryExhaustedError(dependency="ollama", attempts=4), id="already-retried"
        ),
    ],
)
def test_permanent_errors_propagate_unchanged_at_once(error: Callable[[], Exception]) -> None:
    """An error the default `on` does not call transient is re-raised as is, without a wait."""
    clock = FakeClock()
    script = Script(clock, error=error)
    events: list[RetryEvent] = []
    with pytest.raises(Exception) as info:
        retrier(clock, listeners=[events.append]).call(script)
    assert info.value is script.raised[0]
    assert len(script.starts) == 1 and clock.sleeps == []
    assert events == [RetryGivenUp("ollama", 1, "permanent", type(info.value).__name__)]


@pytest.mark.parametrize(
    ("on", "error", "retried"),
    [
        pytest.param(ConnectionError, ConnectionResetError, True, id="type-subclass"),
        pytest.param(ConnectionError, ValueError, False, id="type-other"),
        pytest.param((TimeoutError, ConnectionError), TimeoutError, True, id="tuple"),
        pytest.param(lambda e: "busy" in str(e), ValueError, True, id="predicate-true"),
        pytest.param(lambda e: None, ValueError, False, id="predicate-none"),
    ],
)
def test_on_accepts_types_tuples_and_predicates(
    on: Any, error: type[Exception], retried: bool
) -> None:
    """`on` retries exactly the exception types it names, or what its predicate accepts."""
    clock = FakeClock()
    script = Script(clock, failures=1, error=lambda: error("busy"))
    r = retrier(clock, config=RetryConfig(on=on))
    if retried:
        assert r.call(script) == "ok"
    else:
        with pytest.raises(error):
            r.call(script)
    assert len(script.starts) == (2 if retried else 1)


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        pytest.param(2.5, 2.5, id="retry-after"),
        pytest.param(0, 0.0, id="now"),
        pytest.param(-3.0, 0.0, id="negative-is-now"),
        pytest.param(600.0, 10.0, id="capped-by-max-delay"),
    ],
)
def test_a_predicate_returning_seconds_sets_the_wait(verdict: float, expected: float) -> None:
    """A float from the predicate is the wait, clamped to [0, max_delay_s]."""
    clock = FakeClock()
    config = RetryConfig(on=lambda e: verdict, max_delay_s=10.0, timeout_s=None)
    assert retrier(clock, config=config).call(Script(clock, failures=1)) == "ok"
    assert clock.sleeps == [expected]


def test_default_on_honours_retry_after() -> None:
    """The default `on` waits an error's retry_after (HTTP Retry-After) instead of the backoff."""
    clock = FakeClock()
    script = Script(clock, failures=1, error=lambda: LLMUnavailable("ollama", "429", retry_after=3))
    assert retrier(clock).call(script) == "ok"
    assert clock.sleeps == [3.0]
    assert retry_if_transient(LLMUnavailable("ollama", "503")) is True
    assert retry_if_transient(LLMUnavailable("ollama", "429", retry_after=0)) is True


# -- total timeout ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    cost=st.floats(0, 3),
    timeout=st.floats(0.5, 20),
    jitter=st.sampled_from(["full", "decorrelated"]),
)
def test_total_timeout_is_never_crossed(
    seed: int, cost: float, timeout: float, jitter: Literal["full", "decorrelated"]
) -> None:
    """From the first failure, no wait ends and no attempt starts past timeout_s."""
    clock = FakeClock()
    script = Script(clock, cost_s=cost)
    events: list[RetryEvent] = []
    config = RetryConfig(max_attempts=10_000, base_delay_s=0.3, timeout_s=timeout, jitter=jitter)
    with pytest.raises(LLMUnavailable) as info:  # the original error, not RetryExhaustedError
        retrier(clock, seed, config=config, listeners=[events.append]).call(script)
    deadline = script.starts[0] + cost + timeout
    assert info.value is script.raised[-1]
    assert sum(clock.sleeps) <= timeout
    assert all(start < deadline for start in script.starts)
    assert isinstance(events[-1], RetryGivenUp) and events[-1].reason == "deadline"


def test_a_wait_longer_than_the_time_left_gives_up_without_sleeping() -> None:
    """A Retry-After beyond the deadline is not slept: the retrier gives up at once."""
    clock = FakeClock()
    config = RetryConfig(on=lambda e: 20.0, max_delay_s=60.0, timeout_s=timedelta(seconds=5))
    with pytest.raises(LLMUnavailable):
        retrier(clock, config=config).call(Script(clock))
    assert clock.sleeps == []


# -- budget -------------------------------------------------------------------------------------


def test_budget_keeps_retries_to_a_tenth_of_calls_during_an_outage() -> None:
    """1000 calls to a dead dependency retry at most 10% of calls plus the per-second floor."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_retries_per_s=1.0, window_s=10.0, clock=clock)
    events: list[RetryEvent] = []
    config = RetryConfig(max_attempts=4, base_delay_s=0.05, timeout_s=None)
    r = retrier(clock, config=config, budget=budget, listeners=[events.append])
    script = Script(clock)
    for _ in range(1000):
        clock.advance(0.01)
        with pytest.raises(DependencyError):
            r.call(script)
    retries = len(script.starts) - 1000
    elapsed = clock.monotonic()
    assert 0 < retries <= 0.1 * 1000 + 1.0 * (elapsed + 10.0)
    assert retries < 0.2 * 1000  # without a budget: 3000
    assert any(isinstance(e, RetryGivenUp) and e.reason == "budget" for e in events)


def test_budget_deposits_expire_and_withdrawals_refill() -> None:
    """Calls deposit `ratio`, retries withdraw 1, and both expire after window_s."""
    clock = FakeClock(start=100.0)
    budget = RetryBudget(ratio=0.1, min_retries_per_s=0.0, window_s=10.0, clock=clock)
    assert budget.available() == 0.0 and not budget.try_retry()
    for _ in range(50):
        budget.on_call()
    assert budget.available() == pytest.approx(5.0)
    assert [budget.try_retry() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(10.0)  # the withdrawals expire, and so do the deposits
    assert budget.available() == 0.0
    for _ in range(30):
        budget.on_call()
    clock.advance(5.0)
    assert budget.available() == pytest.approx(3.0)  # still inside the window


def test_budget_floor_allows_retries_without_traffic_and_refills() -> None:
    """min_retries_per_s allows that many retries per second, refilled as time passes."""
    clock = FakeClock()
    budget = RetryBudget(
        ratio=0.1, min_retries_per_s=2.0, window_s=timedelta(seconds=5), clock=clock
    )
    assert [budget.try_retry() for _ in range(11)] == [True] * 10 + [False]
    clock.advance(3.0)
    assert not budget.try_retry()  # withdrawals still in the window
    clock.advance(2.0)
    assert budget.available() == pytest.approx(10.0)


def test_budget_is_thread_safe() -> None:
    """Deposits from many threads at once are all counted."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_retries_per_s=0.0, clock=clock)

    def deposit() -> None:
        for _ in range(5000):
            budget.on_call()

    threads = [threading.Thread(target=deposit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.available() == pytest.approx(0.5 * 8 * 5000)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"ratio": -0.1}, "ratio", id="ratio"),
        pytest.param({"min_retries_per_s": math.inf}, "min_retries_per_s", id="floor"),
        pytest.param({"window_s": 0}, "window_s", id="window"),
        pytest.param({"window_s": "10"}, "window_s", id="window-type"),
    ],
)
def test_budget_rejects_bad_settings_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    """A bad budget setting fails on construction with the field's name."""
    with pytest.raises((ValueError, TypeError), match=field):
        RetryBudget(**kwargs)


# -- should_stop, events, async -----------------------------------------------------------------


def test_should_stop_ends_retrying_with_the_original_error() -> None:
    """Once should_stop() is True (the breaker opened) the last error is re-raised at once."""
    clock = FakeClock()
    script = Script(clock)
    events: list[RetryEvent] = []
    r = retrier(clock, should_stop=lambda: len(script.starts) >= 2, listeners=[events.append])
    with pytest.raises(LLMUnavailable) as info:
        r.call(script)
    assert info.value is script.raised[-1]
    assert len(script.starts) == 2
    assert events[-1] == RetryGivenUp("ollama", 2, "stopped", "LLMUnavailable")


def test_listeners_receive_events_and_their_errors_are_swallowed() -> None:
    """Each retry and the final give-up reach every listener, even after one of them raised."""
    clock = FakeClock()
    events: list[RetryEvent] = []

    def broken(event: RetryEvent) -> None:
        raise RuntimeError("metrics down")

    r = retrier(clock, config=RetryConfig(max_attempts=3), listeners=[broken, events.append])
    with pytest.raises(RetryExhaustedError):
        r.call(Script(clock))
    assert events == [
        RetryScheduled("ollama", 1, clock.sleeps[0], "LLMUnavailable"),
        RetryScheduled("ollama", 2, clock.sleeps[1], "LLMUnavailable"),
        RetryGivenUp("ollama", 3, "exhausted", "LLMUnavailable"),
    ]


async def test_acall_retries_with_asleep() -> None:
    """The async path retries the same way, waiting with clock.asleep."""
    clock = FakeClock()
    script = Script(clock, failures=2)
    assert await retrier(clock).acall(script.coro) == "ok"
    assert len(clock.sleeps) == 2
    with pytest.raises(RetryExhaustedError):
        await retrier(clock, config=RetryConfig(max_attempts=2)).acall(Script(clock).coro)


async def test_decorator_detects_coroutine_functions() -> None:
    """Used as a decorator it wraps sync and async functions alike, keeping their names."""
    clock = FakeClock()
    r = retrier(clock)
    sync_script, async_script = Script(clock, failures=1), Script(clock, failures=1)

    @r
    def fetch(x: int) -> str:
        return sync_script() + str(x)

    @r
    async def afetch(x: int) -> str:
        return await async_script.coro() + str(x)

    assert fetch(1) == "ok1" and fetch.__name__ == "fetch"
    assert await afetch(2) == "ok2" and afetch.__name__ == "afetch"
    assert asyncio.iscoroutinefunction(afetch)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="no-attempt"),
        pytest.param({"max_attempts": 2.0}, "max_attempts", id="attempts-float"),
        pytest.param({"base_delay_s": -1}, "base_delay_s", id="negative-base"),
        pytest.param({"max_delay_s": 0.1}, "max_delay_s", id="cap-below-base"),
        pytest.param({"timeout_s": 0}, "timeout_s", id="zero-timeout"),
        pytest.param({"timeout_s": math.inf}, "timeout_s", id="infinite-timeout"),
        pytest.param({"multiplier": 0.5}, "multiplier", id="shrinking"),
        pytest.param({"jitter": "none"}, "jitter", id="no-jitter"),
        pytest.param({"on": ()}, "on", id="empty-tuple"),
        pytest.param({"on": KeyboardInterrupt}, "on", id="interrupt"),
        pytest.param({"on": 3}, "on", id="not-callable"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    """An invalid RetryConfig fails on construction with a message naming the field."""
    with pytest.raises((ValueError, TypeError), match=field):
        RetryConfig(**kwargs)


def test_config_accepts_timedelta_and_stores_seconds() -> None:
    """Durations given as timedelta are stored as float seconds."""
    config = RetryConfig(
        base_delay_s=timedelta(milliseconds=100),
        max_delay_s=timedelta(seconds=2),
        timeout_s=timedelta(minutes=1),
    )
    assert (config.base_delay_s, config.max_delay_s, config.timeout_s) == (0.1, 2.0, 60.0)


# -- real exceptions from real servers ----------------------------------------------------------


@pytest.fixture
def refused_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _as_dependency_error(call: Callable[[], Any]) -> Any:
    """The test's stand-in for a client boundary: httpx connect errors become transient."""
    import httpx

    try:
        return call()
    except httpx.ConnectError as exc:
        raise DependencyError("ollama", "connection refused") from exc


@pytest.mark.integration
def test_refused_http_connection_is_retried(refused_port: int) -> None:
    """A real httpx.ConnectError, translated to a transient error, is retried until exhausted."""
    import httpx

    clock = FakeClock()
    events: list[RetryEvent] = []
    r = retrier(clock, config=RetryConfig(max_attempts=3), listeners=[events.append])
    with httpx.Client(timeout=2.0) as client, pytest.raises(RetryExhaustedError) as info:
        r.call(_as_dependency_error, lambda: client.get(f"http://127.0.0.1:{refused_port}/"))
    assert isinstance(info.value.__cause__, DependencyError)
    assert isinstance(info.value.__cause__.__cause__, httpx.ConnectError)
    assert [type(e).__name__ for e in events] == ["RetryScheduled"] * 2 + ["RetryGivenUp"]


@pytest.mark.integration
async def test_refused_http_connection_is_retried_async(refused_port: int) -> None:
    """The async client's ConnectError is retried the same way through acall."""
    import httpx

    clock = FakeClock()
    attempts = 0

    async def get(client: httpx.AsyncClient) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        try:
            return await client.get(f"http://127.0.0.1:{refused_port}/")
        except httpx.ConnectError as exc:
            raise DependencyError("ollama", "connection refused") from exc

    async with httpx.AsyncClient(timeout=2.0) as client:
        with pytest.raises(RetryExhaustedError):
            await retrier(clock, config=RetryConfig(max_attempts=3)).acall(get, client)
    assert attempts == 3


def _retry_operational(exc: BaseException) -> bool:
    """This test's own rule: psycopg connection failures are worth retrying, nothing else."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("conninfo", "retried"),
    [
        pytest.param(
            "host=127.0.0.1 port={port} dbname=x user=x connect_timeout=2", True, id="refused"
        ),
        pytest.param("nonsense=1", False, id="bad-conninfo"),
    ],
)
def test_psycopg_connect_errors_follow_the_predicate(
    refused_port: int, conninfo: str, retried: bool
) -> None:
    """A refused psycopg.connect raises OperationalError (retried); a bad conninfo is not."""
    import psycopg

    clock = FakeClock()
    r = retrier(clock, config=RetryConfig(max_attempts=3, on=_retry_operational))
    if retried:
        with pytest.raises(RetryExhaustedError) as info:
            r.call(lambda: psycopg.connect(conninfo.format(port=refused_port)))
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert len(clock.sleeps) == 2
    else:
        with pytest.raises(psycopg.ProgrammingError):
            r.call(lambda: psycopg.connect(conninfo))
        assert clock.sleeps == []


@pytest.fixture
def locked_store(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A DuckDB file held open by another process until its stdin closes."""
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield path, holder
    if holder.poll() is None:
        holder.kill()
    holder.wait(timeout=10)


@pytest.mark.integration
def test_duckdb_lock_conflict_is_retried_until_the_holder_leaves(
    locked_store: tuple[Path, subprocess.Popen[str]],
) -> None:
    """A real DuckDB lock conflict (IOException) is retried; once the holder exits, it connects."""
    import duckdb

    path, holder = locked_store

    def lock_conflict(exc: BaseException) -> bool:
        return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()

    def release(event: RetryEvent) -> None:
        # The backoff is the holder's chance to leave: end it during the first wait.
        if isinstance(event, RetryScheduled) and holder.poll() is None:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=10)

    clock = FakeClock()
    events: list[RetryEvent] = []
    r = retrier(clock, config=RetryConfig(on=lock_conflict), listeners=[events.append, release])
    con = r.call(duckdb.connect, str(path))
    try:
        assert con.execute("select 42").fetchone() == (42,)
    finally:
        con.close()
    assert len(events) == 1
    assert isinstance(events[0], RetryScheduled) and events[0].error_type == "IOException"
