"""Reliability primitives for biomem; self-contained (imports nothing else from biomem).

Circuit breakers with sliding windows, retries with jitter and budgets,
bulkheads, per-dependency policies composing them, a durable dead-letter
queue, classified error events, and redaction — each taking a Clock so that
tests drive time by hand.
"""

from __future__ import annotations

from biomem.resilience.breaker import (
    BreakerConfig,
    BreakerMetrics,
    BreakerRegistry,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    FailureRateExceeded,
    SlowCallRateExceeded,
    StateTransition,
)
from biomem.resilience.budget import RetryBudget
from biomem.resilience.bulkhead import Bulkhead, BulkheadFullError
from biomem.resilience.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from biomem.resilience.deadletter import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStatus,
    DuckDBDeadLetterStore,
    PostgresDeadLetterStore,
    ReplayRegistry,
    TieredDeadLetterStore,
)
from biomem.resilience.errors import (
    BiomemError,
    CircuitOpenError,
    ConfigurationError,
    DatabaseQueryError,
    DatabaseUnavailable,
    DependencyError,
    InputError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailable,
    RetryExhaustedError,
    StoreLockedError,
)
from biomem.resilience.events import ErrorEvent, ErrorKind, ErrorLog, classify
from biomem.resilience.policy import CallTimeoutError, Policy, PolicyConfig
from biomem.resilience.redact import MASK, RedactSecrets, mask_url, redact_text, redact_value
from biomem.resilience.retry import Retrier, RetryConfig

__all__ = [
    "MASK",
    "SYSTEM_CLOCK",
    "BiomemError",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "CallNotPermitted",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "DatabaseQueryError",
    "DatabaseUnavailable",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "DependencyError",
    "DuckDBDeadLetterStore",
    "ErrorEvent",
    "ErrorKind",
    "ErrorLog",
    "FailureRateExceeded",
    "FakeClock",
    "InputError",
    "LLMRequestError",
    "LLMResponseError",
    "LLMUnavailable",
    "Policy",
    "PolicyConfig",
    "PostgresDeadLetterStore",
    "RedactSecrets",
    "ReplayRegistry",
    "Retrier",
    "RetryBudget",
    "RetryConfig",
    "RetryExhaustedError",
    "SlowCallRateExceeded",
    "StateTransition",
    "StoreLockedError",
    "SystemClock",
    "TieredDeadLetterStore",
    "classify",
    "mask_url",
    "redact_text",
    "redact_value",
]
