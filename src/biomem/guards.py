"""The resilience policies of this process, built once from the settings.

One breaker registry, one error log and one policy per dependency; the
clients receive their policy, health and metrics read the same objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from biomem.config import Settings
from biomem.config.filecfg import DependencyGuard
from biomem.resilience.breaker import BreakerConfig, BreakerRegistry
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.errors import DatabaseQueryError, LLMResponseError
from biomem.resilience.events import ErrorLog
from biomem.resilience.policy import Policy, PolicyConfig
from biomem.resilience.retry import RetryConfig, RetryEvent, RetryGivenUp, RetryScheduled

__all__ = ["Guards", "RetryCounts", "build_guards"]


class RetryCounts:
    """Retries and retry-budget refusals per dependency, counted from the retriers' events.

    A :class:`~biomem.resilience.retry.RetryListener`: the retriers stay free
    of metrics, and ``/metrics`` reads the totals at scrape time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._retries: dict[str, int] = {}
        self._budget_exhausted: dict[str, int] = {}

    def __call__(self, event: RetryEvent, /) -> None:
        if isinstance(event, RetryScheduled):
            target = self._retries
        elif isinstance(event, RetryGivenUp) and event.reason == "budget":
            target = self._budget_exhausted
        else:
            return
        with self._lock:
            target[event.name] = target.get(event.name, 0) + 1

    def retries(self) -> Mapping[str, int]:
        """Retries scheduled since start, by dependency."""
        with self._lock:
            return dict(self._retries)

    def budget_exhausted(self) -> Mapping[str, int]:
        """Retries the budget refused since start (the call gave up), by dependency."""
        with self._lock:
            return dict(self._budget_exhausted)


def _counts_for_postgres_or_duckdb(exc: BaseException) -> bool:
    # A query we got wrong says nothing about the database's health.
    return not isinstance(exc, DatabaseQueryError)


def _counts_for_ollama(exc: BaseException) -> bool:
    # An unreadable answer comes from a live server: the stage retries or falls back.
    return not isinstance(exc, LLMResponseError)


def _breaker(guard: DependencyGuard, counts: Callable[[BaseException], bool]) -> BreakerConfig:
    return BreakerConfig(
        record_predicate=counts,
        window_type="count",
        window_size=guard.window_size,
        minimum_calls=min(guard.minimum_calls, guard.window_size),
        failure_rate_threshold=guard.failure_rate_threshold,
        slow_call_rate_threshold=guard.slow_call_rate_threshold,
        slow_call_duration_s=guard.slow_call_seconds,
        wait_duration_open_s=guard.open_seconds,
        wait_multiplier=guard.open_multiplier,
        max_wait_duration_open_s=guard.max_open_seconds,
        permitted_calls_in_half_open=guard.half_open_calls,
    )


def _retry(guard: DependencyGuard) -> RetryConfig:
    return RetryConfig(
        max_attempts=guard.max_attempts,
        base_delay_s=guard.base_delay_seconds,
        multiplier=guard.delay_multiplier,
        jitter=guard.jitter,
        max_delay_s=guard.max_delay_seconds,
        timeout_s=guard.retry_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class Guards:
    """The policies, breakers and error log shared by the whole process."""

    clock: Clock
    breakers: BreakerRegistry
    errors: ErrorLog
    postgresql: Policy
    duckdb: Policy
    ollama: Policy
    retries: RetryCounts = field(default_factory=RetryCounts)


def build_guards(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Guards:
    """Build the three policies from the settings (TOML [resilience.*] and the environment)."""
    cfg = settings.resilience
    breakers = BreakerRegistry(clock=clock)
    errors = ErrorLog()
    retries = RetryCounts()

    def policy(name: str, config: PolicyConfig) -> Policy:
        built = Policy(name, config, clock=clock, breakers=breakers, errors=errors)
        if built.retrier is not None:
            built.retrier.add_listener(retries)
        return built

    return Guards(
        retries=retries,
        clock=clock,
        breakers=breakers,
        errors=errors,
        postgresql=policy(
            "postgresql",
            PolicyConfig(
                # One call per pooled connection; a caller waits for a slot as long as
                # it would wait for a connection. Sync calls have no policy timeout:
                # the client's own deadlines bound each wait for the server.
                max_concurrent=cfg.postgresql.max_connections,
                max_wait_s=cfg.postgresql.acquire_timeout_seconds,
                breaker=_breaker(cfg.postgresql, _counts_for_postgres_or_duckdb),
                retry=_retry(cfg.postgresql),
                retry_budget_ratio=cfg.postgresql.retry_budget_ratio,
            ),
        ),
        duckdb=policy(
            "duckdb",
            PolicyConfig(
                breaker=_breaker(cfg.duckdb, _counts_for_postgres_or_duckdb),
                retry=_retry(cfg.duckdb),
                retry_budget_ratio=cfg.duckdb.retry_budget_ratio,
            ),
        ),
        ollama=policy(
            "ollama",
            PolicyConfig(
                timeout_s=settings.ollama.timeout_seconds,
                max_concurrent=settings.ollama.max_concurrency,
                max_wait_s=None,  # callers queue for a slot; the timeout bounds each call
                breaker=_breaker(cfg.ollama, _counts_for_ollama),
                retry=_retry(cfg.ollama),
                retry_budget_ratio=cfg.ollama.retry_budget_ratio,
            ),
        ),
    )
