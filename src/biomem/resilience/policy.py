"""One policy per dependency: timeout → bulkhead → breaker → retry → fallback.

Read from the inside out: each attempt runs under a timeout (async calls;
sync calls rely on their library's own timeouts) inside a bulkhead slot,
through the dependency's circuit breaker; the retrier repeats failed
attempts that are transient, never while the breaker is open and never
beyond the retry budget; finally a fallback, when the caller gives one,
turns the dependency's failure into a degraded answer. Every failed attempt
becomes an error event. Bugs (exceptions outside the dependency error tree)
are never caught by the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from biomem.resilience.breaker import BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker
from biomem.resilience.budget import RetryBudget
from biomem.resilience.bulkhead import Bulkhead
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.errors import CircuitOpenError, DependencyError
from biomem.resilience.events import ErrorLog
from biomem.resilience.retry import Retrier, RetryConfig

__all__ = ["CallTimeoutError", "Policy", "PolicyConfig"]

T = TypeVar("T")


class CallTimeoutError(DependencyError):
    """The call took longer than the policy's timeout (transient)."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(name, f"no answer within {timeout_s:g} s")
        self.timeout_s = timeout_s


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """How calls to one dependency are guarded."""

    timeout_s: float | None = None  # per attempt, async calls
    max_concurrent: int | None = None  # bulkhead; None: unbounded
    max_wait_s: float | None = None  # for a bulkhead slot; None: as long as it takes
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig | None = field(default_factory=RetryConfig)
    retry_budget_ratio: float = 0.1


class Policy:
    """The guard around every call to one dependency.

    Args:
        name: the dependency (``postgresql``, ``duckdb``, ``ollama``).
        config: timeout, bulkhead, breaker and retry settings.
        breakers: the registry the breaker is taken from (shared with health and metrics).
        errors: where failed attempts are recorded as error events.
    """

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        breakers: BreakerRegistry | None = None,
        errors: ErrorLog | None = None,
    ) -> None:
        self.name = name
        self.config = config
        registry = breakers if breakers is not None else BreakerRegistry(clock=clock)
        self.breaker: CircuitBreaker = registry.get(name, config.breaker)
        self.bulkhead = (
            Bulkhead(name, max_concurrent=config.max_concurrent, max_wait_s=config.max_wait_s)
            if config.max_concurrent
            else None
        )
        self.errors = errors
        self.budget = RetryBudget(ratio=config.retry_budget_ratio, clock=clock)
        self.retrier = (
            Retrier(
                config.retry,
                name=name,
                clock=clock,
                budget=self.budget,
                # No retry while the breaker is open: fail fast into the fallback.
                should_stop=lambda: self.breaker.state is BreakerState.OPEN,
            )
            if config.retry is not None
            else None
        )

    def _record(self, exc: BaseException, operation: str) -> None:
        # A refusal by our own breaker is not news about the dependency.
        if self.errors is not None and not isinstance(exc, CircuitOpenError):
            self.errors.record(exc, component=self.name, operation=operation)

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        operation: str = "call",
        fallback: Callable[[DependencyError], T] | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> T:
        """Call ``fn`` through the policy (sync).

        Args:
            operation: names the call in error events.
            fallback: given the final dependency error, returns the degraded answer.
            retry: False for calls that must not be repeated (not idempotent).
        """

        def attempt() -> T:
            slot = self.bulkhead.slot() if self.bulkhead is not None else nullcontext()
            try:
                with slot:
                    return self.breaker.call(fn, *args, **kwargs)
            except DependencyError as exc:
                self._record(exc, operation)
                raise

        try:
            if retry and self.retrier is not None:
                return self.retrier.call(attempt)
            return attempt()
        except DependencyError as exc:
            if fallback is None:
                raise
            return fallback(exc)

    async def acall(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        operation: str = "call",
        fallback: Callable[[DependencyError], T] | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> T:
        """Await ``fn`` through the policy; the timeout applies to each attempt."""
        timeout_s = self.config.timeout_s

        async def timed() -> T:
            try:
                async with asyncio.timeout(timeout_s):
                    return await fn(*args, **kwargs)
            except TimeoutError:
                raise CallTimeoutError(self.name, timeout_s or 0.0) from None

        async def attempt() -> T:
            try:
                if self.bulkhead is None:
                    return await self.breaker.acall(timed)
                async with self.bulkhead.aslot():
                    return await self.breaker.acall(timed)
            except DependencyError as exc:
                self._record(exc, operation)
                raise

        try:
            if retry and self.retrier is not None:
                return await self.retrier.acall(attempt)
            return await attempt()
        except DependencyError as exc:
            if fallback is None:
                raise
            return fallback(exc)
