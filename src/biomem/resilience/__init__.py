"""Reliability primitives for biomem; self-contained (imports nothing else from biomem)."""

from __future__ import annotations

from biomem.resilience.errors import (
    BiomemError,
    ConfigurationError,
    DatabaseQueryError,
    DatabaseUnavailable,
    DependencyError,
    InputError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailable,
    StoreLockedError,
)

__all__ = [
    "BiomemError",
    "ConfigurationError",
    "DatabaseQueryError",
    "DatabaseUnavailable",
    "DependencyError",
    "InputError",
    "LLMRequestError",
    "LLMResponseError",
    "LLMUnavailable",
    "StoreLockedError",
]
