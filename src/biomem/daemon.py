"""The daemon of ``biomem run``: the scheduled stages with everything that watches over them.

The health monitor, the alert service, automated recovery and the health
HTTP server start around the orchestrator and stop, in order, when the
stop event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import typer

from biomem import __version__
from biomem.alerting import AlertService
from biomem.app import App
from biomem.health.checks import build_checks
from biomem.health.monitor import HealthMonitor
from biomem.health.server import build_health_server
from biomem.orchestrator import Orchestrator
from biomem.pipeline.runner import StageOutcome
from biomem.recovery import RecoveryService
from biomem.recovery.routes import add_recovery_routes
from biomem.store import DuckDBStore

__all__ = ["run_daemon", "store_summary"]


def store_summary(store: DuckDBStore) -> dict[str, Any]:
    """The store's path and how many memories and quarantined records it holds."""
    memories = store.fetchone("SELECT count(*) FROM memories")
    quarantined = store.fetchone("SELECT count(*) FROM quarantine")
    return {
        "store": str(store.path),
        "memories": int(memories[0]) if memories else 0,
        "quarantined": int(quarantined[0]) if quarantined else 0,
    }


def run_daemon(
    orchestrator: Orchestrator,
    application: App,
    stop: threading.Event,
    *,
    on_pass: Callable[[list[StageOutcome]], None],
) -> None:
    """Monitor, alerting, recovery and the health server around the scheduled stages.

    Returns when ``stop`` is set (SIGTERM / Ctrl-C); everything it started is
    stopped, in order, before it returns.
    """
    summary = store_summary(application.store)
    client = application.postgres
    settings = application.settings
    typer.echo(
        f"biomem {__version__}: store {summary['store']}: {summary['memories']} memories, "
        f"{summary['quarantined']} quarantined records"
    )
    typer.echo(
        "PostgreSQL source: "
        + ("configured" if client is not None else "not configured (embedded only)")
    )
    # Without continuous monitoring the endpoints run the checks on request,
    # at most once per interval; alerts and recovery see those runs only.
    monitor = HealthMonitor(
        build_checks(application),
        interval_s=settings.health.check_interval_seconds,
        on_demand=not settings.health.continuous_monitoring,
    )
    alerting = AlertService(
        application,
        monitor,
        external_url=f"http://{settings.health.host}:{settings.health.port}/health/alerts",
    )
    recovery = RecoveryService(application, monitor, orchestrator, alerting=alerting)
    server = None
    if settings.health.http_endpoints:
        server = build_health_server(
            application,
            monitor,
            alerts=alerting.snapshot,
            shutting_down=stop.is_set,
            alerting=alerting,
            recovery=recovery,
            schedule=orchestrator.next_run_times,
        )
        add_recovery_routes(server.api, recovery, settings)
        server.start()
        typer.echo(f"health endpoints: {server.url}/health, {server.url}/metrics")
        typer.echo(f"status page: {server.url}/status")
    alerting.start()
    if monitor.on_demand:
        typer.echo("health checks: on request (HEALTH_CONTINUOUS_MONITORING=false)")
    else:
        monitor.start()
    typer.echo("running; press Ctrl-C to stop")
    try:
        orchestrator.start(on_pass=on_pass)
        recovery.start()
        # wait() with a timeout keeps the main thread responsive to signals.
        while not stop.wait(1.0):
            pass
    finally:
        recovery.stop()
        monitor.stop()
        alerting.stop()
        if server is not None:
            server.stop()
