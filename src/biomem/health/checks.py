"""The health checks of biomem's components, and :func:`build_checks` for an :class:`App`.

Every check runs its blocking work in a thread (``asyncio.to_thread``), times
itself, and never raises for a dependency's failure: a :class:`BiomemError`
becomes a status and a redacted output. Each also keeps a budget a little
under its ``timeout_s``, so a slow dependency is reported by the check itself
(with its details: breaker, pool, last error) rather than by the monitor's
bare "check timed out". A thread left behind by a missed budget ends on the
client's own timeouts.

Checks go through the same policies as the pipeline: their calls count in
the breakers, and an OPEN breaker is reported, never called through.

Layout: :class:`BaseCheck` and its helpers in :mod:`biomem.health._check_base`,
one module per dependency (``_check_postgres``, ``_check_duckdb``,
``_check_ollama``); the process's own resources and pipeline in
:mod:`biomem.health.resources`. Import the checks from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from biomem.health._check_base import REFUSING_STATES, BaseCheck, WallClock, error_text
from biomem.health._check_duckdb import DuckDBCheck
from biomem.health._check_ollama import OllamaCheck
from biomem.health._check_postgres import SLOW_RESPONSE_MS, PostgresCheck
from biomem.health.model import Check

if TYPE_CHECKING:
    from biomem.app import App

__all__ = [
    "REFUSING_STATES",
    "SLOW_RESPONSE_MS",
    "BaseCheck",
    "DuckDBCheck",
    "OllamaCheck",
    "PostgresCheck",
    "WallClock",
    "build_checks",
    "error_text",
]


def build_checks(app: App) -> list[Check]:
    """Every check of the process, wired to ``app``; the monitor runs them concurrently."""
    # Here, not at the top: importing biomem.health stays light (no psutil, no stages).
    from biomem.health.resources import CpuWindow, PipelineCheck, SystemResourcesCheck

    health = app.settings.health
    return [
        DuckDBCheck(app),
        PostgresCheck(app),
        OllamaCheck(app),
        SystemResourcesCheck(
            app.store.path.parent,
            health.thresholds,
            cpu=CpuWindow(health.check_interval_seconds),
        ),
        PipelineCheck(app),
    ]
