"""Health: checks, the monitor that keeps a snapshot, and the HTTP API."""

from __future__ import annotations

from biomem.health.checks import build_checks
from biomem.health.model import (
    Check,
    ComponentHealth,
    HealthSnapshot,
    Measurement,
    Status,
    StatusTransition,
    aggregate,
)

__all__ = [
    "Check",
    "ComponentHealth",
    "HealthSnapshot",
    "Measurement",
    "Status",
    "StatusTransition",
    "aggregate",
    "build_checks",
]
