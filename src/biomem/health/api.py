"""The health HTTP API: application/health+json, details, alerts, probes and metrics.

Every endpoint answers from what the process already knows — the monitor's
snapshot, the breakers, the error log — so a hanging dependency never slows
it; the only store reads (dead letters, last runs) run on a bounded thread
with a short timeout and report their failure instead of waiting. Every body
passes through :func:`~biomem.resilience.redact.redact_value`.

A monitor without its background loop (``on_demand``) is asked for a fresh
snapshot instead: the health endpoints, /metrics and the status data run
the checks when the last result is older than the interval, one run shared
by concurrent requests and each check under its own timeout, so a hanging
dependency delays a request by its check's timeout at most.

==========================  =====  ============================================
path                        token  answers
==========================  =====  ============================================
GET /health                 no     draft-inadarei-api-health-check; 503 on fail
GET /health/detailed        yes    components, history, breakers, budgets, DLQ,
                                   recent errors, last runs
GET /health/alerts          yes    ``{"active", "recent", "undelivered"}``, and
                                   ``silences``, ``notifications`` when alerting runs
GET /health/{service}       yes    one component (404 for an unknown name)
GET /livez, GET /readyz     no     the process runs / the store is open
GET /metrics                yes    Prometheus text
GET /status, /status/data   yes    the status page and its live data (see
                                   :mod:`~biomem.health.status_page`; also
                                   ``?token=``; not in /openapi.json)
==========================  =====  ============================================

Given a ``silences`` control (the daemon's alerting service), the API also
serves ``POST /health/alerts/silences`` and ``DELETE
/health/alerts/silences/{id}`` (token: yes; see :mod:`biomem.alerts.routes`).

"token": required only when the server is reachable beyond loopback
(``require_token``). Errors are JSON ``{"error": ...}``; an unexpected
exception is logged and answered 503 ``{"error": "internal error", "id"}``,
never 500 and never with its text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import biomem
from biomem.alerts.routes import SilenceControl, add_silence_routes
from biomem.app import App
from biomem.health._api_bodies import (
    _breaker_body,
    _error,
    _recent_actions,
    _recovery_body,
    _safe,
    _store_reads,
    component_body,
    health_body,
)
from biomem.health._api_errors import (
    _install_error_handlers,
    _token_guard,
)
from biomem.health._api_models import (
    _HISTORY_MAX,
    HEALTH_MEDIA_TYPE,
    KNOWN_SERVICES,
    AlertsBody,
    DetailedBody,
    ErrorBody,
    HealthBody,
    HealthJSONResponse,
    InternalErrorBody,
    InvalidRequestBody,
    ProbeBody,
    ServiceBody,
    UnknownServiceBody,
)
from biomem.health.fastpath import Rendered
from biomem.health.model import ComponentHealth, HealthSnapshot, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.status_data import ScheduleProvider, StatusSources
from biomem.health.status_page import add_status_routes
from biomem.metrics import BoundedReader

__all__ = ["HEALTH_MEDIA_TYPE", "KNOWN_SERVICES", "create_api", "health_response", "render_health"]

logger = logging.getLogger(__name__)

_Responses = dict[int | str, dict[str, Any]]

# --------------------------------------------------------------------------- factory


def health_response(snapshot: HealthSnapshot, max_age_s: float) -> Response:
    """``GET /health``'s response for ``snapshot``: 200 pass/warn, 503 fail."""
    code = 503 if snapshot.status.wire == "fail" else 200
    return HealthJSONResponse(
        _safe(health_body(snapshot)),
        status_code=code,
        headers={"Cache-Control": f"max-age={max(0, int(max_age_s))}"},
    )


def render_health(snapshot: HealthSnapshot, max_age_s: float) -> Rendered:
    """:func:`health_response` as bytes for :class:`~biomem.health.fastpath.CachedHealth`."""
    response = health_response(snapshot, max_age_s)
    return Rendered(response.status_code, tuple(response.raw_headers), bytes(response.body))


def create_api(
    *,
    monitor: HealthMonitor,
    app: App,
    registry: CollectorRegistry,
    alerts: Callable[[], Mapping[str, Any]] | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
    token: str | None = None,
    require_token: bool = False,
    reader: BoundedReader | None = None,
    recovery: Callable[[], Mapping[str, Any]] | None = None,
    silences: SilenceControl | None = None,
    schedule: ScheduleProvider | None = None,
) -> FastAPI:
    """The health API over ``monitor`` and ``app``; the server decides ``require_token``.

    ``recovery`` (the daemon's recovery service) adds its recent actions to
    /health/detailed; ``schedule`` (the orchestrator's next fire times) gives
    the status page each stage's real next run.

    Raises:
        ValueError: ``require_token`` without a ``token``.
    """
    if require_token and not token:
        raise ValueError("require_token needs a token")
    reader = reader if reader is not None else BoundedReader(timeout_s=2.0)
    # Dead letters may be read from PostgreSQL: apart from the store's reads (see _store_reads).
    letters_reader = BoundedReader(timeout_s=reader.timeout_s)
    api = FastAPI(
        title="biomem health",
        version=biomem.__version__,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    _install_error_handlers(api)
    guarded = [Depends(_token_guard(token))] if require_token and token else []
    locked: _Responses = (
        {401: {"model": ErrorBody, "description": "Missing or wrong bearer token"}}
        if guarded
        else {}
    )
    internal: _Responses = {503: {"model": InternalErrorBody, "description": "Internal error"}}
    invalid: _Responses = {422: {"model": InvalidRequestBody, "description": "Invalid query"}}

    def known_services() -> list[str]:
        return sorted({*KNOWN_SERVICES, *monitor.snapshot().components})

    @api.get(
        "/health",
        response_model=HealthBody,
        response_class=HealthJSONResponse,
        responses={503: {"model": HealthBody | InternalErrorBody, "description": "fail"}},
        summary="Overall health (application/health+json); 200 pass/warn, 503 fail",
    )
    async def health() -> Response:
        # With the background monitor this never runs a check: a hung
        # dependency cannot slow it. On demand it may wait for the shared run
        # (bounded by the checks' timeouts). The server serves the same
        # response from fastpath.CachedHealth, rendered once per snapshot;
        # this route documents it and answers the rest.
        snapshot = await monitor.fresh_snapshot_async()
        return health_response(snapshot, monitor.max_age_s())

    @api.get(
        "/health/detailed",
        response_model=DetailedBody,
        dependencies=guarded,
        responses={**locked, **invalid, **internal},
        summary="Every component with history, breakers, budgets, dead letters, errors, runs",
    )
    def detailed(history: int = Query(20, ge=0, le=_HISTORY_MAX)) -> Response:
        snapshot = monitor.fresh_snapshot()  # a sync route: on a worker thread
        letters, runs = _store_reads(app, reader, letters_reader)
        guards = app.guards
        body = {
            "status": snapshot.status.wire,
            "internal_status": snapshot.status.value,
            "taken_at": snapshot.taken_at,
            "components": {
                name: component_body(comp, monitor, history)
                for name, comp in snapshot.components.items()
            },
            "breakers": _breaker_body(app),
            "retry_budgets": {
                p.name: p.budget.available()
                for p in (guards.postgresql, guards.duckdb, guards.ollama)
            },
            "dead_letters": letters,
            "errors": {
                "recent": [e.as_dict() for e in guards.errors.recent(limit=50)],
                "counts": [
                    {"component": comp, "kind": kind.value, "count": n}
                    for (comp, kind), n in sorted(guards.errors.counts().items())
                ],
            },
            "runs": runs,
        }
        if recovery is not None:
            body["recovery"] = _recovery_body(recovery)
        return JSONResponse(_safe(body))

    @api.get(
        "/health/alerts",
        response_model=AlertsBody,
        dependencies=guarded,
        responses={**locked, **internal},
        summary="Active and recent alerts, and how many could not be delivered",
    )
    def health_alerts() -> Response:
        given = dict(alerts()) if alerts is not None else {}
        body = {
            "active": list(given.get("active", [])),
            "recent": list(given.get("recent", [])),
            "undelivered": int(given.get("undelivered", 0)),
        }
        for extra in ("silences", "notifications"):  # given by the alerting service
            if extra in given:
                body[extra] = list(given[extra])
        return JSONResponse(_safe(body))

    if silences is not None:
        add_silence_routes(
            api, silences, dependencies=guarded, responses={**locked, **invalid, **internal}
        )

    @api.get(
        "/health/{service}",
        response_model=ServiceBody,
        dependencies=guarded,
        responses={
            **locked,
            **invalid,
            404: {"model": UnknownServiceBody, "description": "Unknown service"},
            503: {"model": ServiceBody | InternalErrorBody, "description": "fail"},
        },
        summary="One component: postgresql, duckdb, ollama, system_resources or pipeline",
    )
    def service(service: str, history: int = Query(20, ge=0, le=_HISTORY_MAX)) -> Response:
        known = known_services()
        if service not in known:
            return _error(404, "unknown service", known=known)
        snapshot = monitor.fresh_snapshot()
        comp = snapshot.component(service) or ComponentHealth(
            name=service,
            component_type="component",
            status=Status.UNKNOWN,
            required=False,
            checked_at=snapshot.taken_at,
            duration_ms=0.0,
            output="not monitored by this process",
        )
        body = component_body(comp, monitor, history)
        breakers = _breaker_body(app, service)
        body["breaker"] = breakers[0] if breakers else None
        body["recent_errors"] = [e.as_dict() for e in app.guards.errors.recent(component=service)]
        return JSONResponse(_safe(body), status_code=503 if comp.status.wire == "fail" else 200)

    @api.get(
        "/livez",
        response_model=ProbeBody,
        responses=internal,
        summary="The process answers (no dependency is consulted)",
    )
    async def livez() -> Response:
        return JSONResponse({"status": "pass"})

    @api.get(
        "/readyz",
        response_model=ProbeBody,
        responses={503: {"model": ProbeBody | InternalErrorBody, "description": "not ready"}},
        summary="200 while the store is open and the process is not shutting down",
    )
    async def readyz() -> Response:
        if shutting_down():
            return JSONResponse({"status": "fail", "output": "shutting down"}, status_code=503)
        if app.store.closed:
            return JSONResponse({"status": "fail", "output": "store closed"}, status_code=503)
        return JSONResponse({"status": "pass"})

    @api.get(
        "/metrics",
        response_class=PlainTextResponse,
        dependencies=guarded,
        responses={**locked, **internal},
        summary="Prometheus text exposition",
    )
    def metrics() -> Response:
        monitor.fresh_snapshot()  # on demand: biomem_health_* as of now, not of the last request
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    sources = StatusSources(
        monitor=monitor,
        app=app,
        reader=reader,
        letters_reader=letters_reader,
        alerts=alerts,
        recovery=_recent_actions(recovery) if recovery is not None else None,
        schedule=schedule,
    )
    add_status_routes(api, sources, token=token, require_token=require_token)
    return api
