"""The health HTTP API: application/health+json, details, alerts, probes and metrics.

Every endpoint answers from what the process already knows — the monitor's
snapshot, the breakers, the error log — so a hanging dependency never slows
it; the only store reads (dead letters, last runs) run on a bounded thread
with a short timeout and report their failure instead of waiting. Every body
passes through :func:`~biomem.resilience.redact.redact_value`.

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

import contextlib
import hmac
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from enum import Enum
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import biomem
from biomem.alerts.routes import SilenceControl, add_silence_routes
from biomem.app import App
from biomem.health.fastpath import Rendered
from biomem.health.model import ComponentHealth, HealthSnapshot, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.status_data import StatusSources
from biomem.health.status_page import add_status_routes
from biomem.metrics import BoundedReader
from biomem.resilience.redact import redact_text, redact_value
from biomem.store.runs import last_runs

__all__ = ["HEALTH_MEDIA_TYPE", "KNOWN_SERVICES", "create_api"]

logger = logging.getLogger(__name__)

_Responses = dict[int | str, dict[str, Any]]

HEALTH_MEDIA_TYPE = "application/health+json"
KNOWN_SERVICES = ("postgresql", "duckdb", "ollama", "system_resources", "pipeline")
_DESCRIPTION = "biomem: a biological memory pipeline"
_HISTORY_MAX = 240


class HealthJSONResponse(JSONResponse):
    media_type = HEALTH_MEDIA_TYPE


# --------------------------------------------------------------------------- documents
# What the endpoints return, for /openapi.json: routes build plain dicts (then
# redacted) and these models only describe them, strictly (no extra keys).

Wire = Literal["pass", "warn", "fail"]
InternalStatus = Literal["healthy", "degraded", "unhealthy", "critical", "unknown"]
Observed = float | int | str | bool | None
Instant = Annotated[str, Field(description="ISO 8601 time")]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CheckEntry(_Doc):
    component_id: str = Field(alias="componentId")
    component_type: str = Field(alias="componentType")
    observed_value: Observed = Field(default=None, alias="observedValue")
    observed_unit: str | None = Field(default=None, alias="observedUnit")
    status: Wire
    time: Instant
    output: str | None = Field(default=None, description="why, when the status is not pass")


class HealthBody(_Doc):
    """draft-inadarei-api-health-check."""

    status: Wire
    version: str
    release_id: str = Field(alias="releaseId")
    service_id: str = Field(alias="serviceId")
    description: str
    output: str | None = None
    checks: dict[str, list[CheckEntry]]


class MeasurementDetail(_Doc):
    name: str
    value: Observed
    unit: str | None
    status: InternalStatus
    wire: Wire
    output: str | None


class HistoryPoint(_Doc):
    at: Instant
    status: InternalStatus


class ComponentDetail(_Doc):
    name: str
    type: str
    required: bool
    status: InternalStatus
    wire: Wire
    output: str | None
    checked_at: Instant
    duration_ms: float
    measurements: list[MeasurementDetail]
    details: dict[str, Any]
    history: list[HistoryPoint]


class BreakerDetail(_Doc):
    name: str
    state: Literal["closed", "open", "half_open", "disabled", "forced_open", "metrics_only"]
    failure_rate: float = Field(description="-1 below the minimum number of calls")
    slow_call_rate: float = Field(description="-1 below the minimum number of calls")
    calls: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int
    consecutive_opens: int
    retry_after_s: float


class ServiceBody(ComponentDetail):
    breaker: BreakerDetail | None
    recent_errors: list[dict[str, Any]]


class DeadLettersDetail(_Doc):
    counts: dict[str, int]
    oldest_pending: Instant | None
    error: str | None


class ErrorCount(_Doc):
    component: str
    kind: str
    count: int


class ErrorsDetail(_Doc):
    recent: list[dict[str, Any]]
    counts: list[ErrorCount]


class RunsDetail(_Doc):
    last: list[dict[str, Any]]
    error: str | None


class RecoveryDetail(_Doc):
    enabled: bool
    dry_run: bool
    rules: int
    recent: list[dict[str, Any]] = Field(description="the latest decisions, newest first")
    error: str | None = None


class DetailedBody(_Doc):
    status: Wire
    internal_status: InternalStatus
    taken_at: Instant
    components: dict[str, ComponentDetail]
    breakers: list[BreakerDetail]
    retry_budgets: dict[str, float]
    dead_letters: DeadLettersDetail
    errors: ErrorsDetail
    runs: RunsDetail
    recovery: RecoveryDetail | None = Field(
        default=None, description="automated recovery's recent actions (in the daemon)"
    )


class AlertsBody(_Doc):
    active: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    undelivered: int
    silences: list[dict[str, Any]] = Field(
        default_factory=list, description="active silences (when alerting runs)"
    )
    notifications: list[dict[str, Any]] = Field(
        default_factory=list, description="undelivered notifications (when alerting runs)"
    )


class ProbeBody(_Doc):
    status: Literal["pass", "fail"]
    output: str | None = None


class ErrorBody(_Doc):
    error: str


class InternalErrorBody(_Doc):
    error: str
    id: str


class UnknownServiceBody(_Doc):
    error: str
    known: list[str]


class ValidationIssue(_Doc):
    loc: list[str | int]
    msg: str
    type: str | None


class InvalidRequestBody(_Doc):
    error: str
    detail: list[ValidationIssue]


def _plain(value: Any) -> Any:
    """JSON-ready data: containers to dicts/lists, times to ISO 8601, NaN/inf to None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


def _safe(value: Any) -> Any:
    """What may leave the process: plain JSON data, redacted."""
    return redact_value("health", _plain(value))


def _error(status_code: int, error: str, **extra: Any) -> JSONResponse:
    return JSONResponse(_safe({"error": error, **extra}), status_code=status_code)


# --------------------------------------------------------------------------- bodies


def health_body(snapshot: HealthSnapshot) -> dict[str, Any]:
    """The application/health+json document of a snapshot.

    One ``component:measurement`` entry per measurement, plus a
    ``component:status`` entry when the component has no measurements or its
    status is worse than all of them (a timed-out check has none).
    """
    checks: dict[str, list[dict[str, Any]]] = {}
    for comp in snapshot.components.values():
        prefix = "system" if comp.name == "system_resources" else comp.name
        base = {"componentId": comp.name, "componentType": comp.component_type}
        when = comp.checked_at.isoformat()
        for m in comp.measurements:
            entry = {**base, "observedValue": m.value, "status": m.status.wire, "time": when}
            if m.unit is not None:
                entry["observedUnit"] = m.unit
            if m.status is not Status.HEALTHY:
                entry["output"] = m.output or comp.output or m.status.value
            checks.setdefault(f"{prefix}:{m.name}", []).append(entry)
        worst = max((m.status.rank for m in comp.measurements), default=-1)
        if comp.status.rank > worst:
            entry = {**base, "observedValue": comp.status.value, "status": comp.status.wire}
            entry["time"] = when
            if comp.status is not Status.HEALTHY:
                entry["output"] = comp.output or comp.status.value
            checks.setdefault(f"{prefix}:status", []).append(entry)
    body: dict[str, Any] = {
        "status": snapshot.status.wire,
        "version": "1",
        "releaseId": biomem.__version__,
        "serviceId": "biomem",
        "description": _DESCRIPTION,
    }
    if snapshot.status is not Status.HEALTHY:
        troubled = [
            f"{c.name} {c.status.value}" + (f" ({c.output})" if c.output else "")
            for c in snapshot.components.values()
            if c.status is not Status.HEALTHY
        ]
        body["output"] = "; ".join(troubled) or snapshot.status.value
    body["checks"] = checks
    return body


def component_body(comp: ComponentHealth, monitor: HealthMonitor, history: int) -> dict[str, Any]:
    recent = monitor.history(comp.name)[-history:] if history > 0 else []
    return {
        "name": comp.name,
        "type": comp.component_type,
        "required": comp.required,
        "status": comp.status.value,
        "wire": comp.status.wire,
        "output": comp.output,
        "checked_at": comp.checked_at,
        "duration_ms": comp.duration_ms,
        "measurements": [
            {
                "name": m.name,
                "value": m.value,
                "unit": m.unit,
                "status": m.status.value,
                "wire": m.status.wire,
                "output": m.output,
            }
            for m in comp.measurements
        ],
        "details": dict(comp.details),
        "history": [{"at": at, "status": status.value} for at, status in recent],
    }


def _breaker_body(app: App, name: str | None = None) -> list[dict[str, Any]]:
    out = []
    for breaker in app.guards.breakers.all():
        if name is not None and breaker.name != name:
            continue
        m = breaker.metrics()
        out.append(
            {
                "name": breaker.name,
                "state": m.state.value,
                "failure_rate": m.failure_rate,
                "slow_call_rate": m.slow_call_rate,
                "calls": m.calls,
                "failed_calls": m.failed_calls,
                "slow_calls": m.slow_calls,
                "not_permitted_calls": m.not_permitted_calls,
                "consecutive_opens": m.consecutive_opens,
                "retry_after_s": breaker.retry_after(),
            }
        )
    return out


def _recent_actions(
    recovery: Callable[[], Mapping[str, Any]],
) -> Callable[[], list[dict[str, Any]]]:
    """The status page's rows from the recovery snapshot: its outcome is the result."""

    def rows() -> list[dict[str, Any]]:
        recent = recovery().get("recent") or []
        out = []
        for row in recent:
            result = row.get("outcome", row.get("result"))
            if result == "skipped" and row.get("reason"):
                result = f"skipped: {row['reason']}"
            out.append({**row, "result": result})
        return out

    return rows


def _recovery_body(recovery: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """Recovery's part of /health/detailed; its failure is reported, never raised."""
    try:
        given = dict(recovery())
    except Exception as exc:  # an in-memory read; a bug here must not cost the document
        logger.exception("recovery snapshot failed")
        return {"enabled": False, "dry_run": False, "rules": 0, "recent": [], "error": str(exc)}
    return {
        "enabled": bool(given.get("enabled", False)),
        "dry_run": bool(given.get("dry_run", False)),
        "rules": int(given.get("rules", 0)),
        "recent": list(given.get("recent", [])),
        "error": None,
    }


def _decoded_counts(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run with its counts as an object (DuckDB hands JSON columns back as text)."""
    out = dict(run)
    if isinstance(out.get("counts"), str):
        with contextlib.suppress(ValueError):  # unreadable: shown as stored
            out["counts"] = json.loads(out["counts"])
    return out


def _store_reads(app: App, reader: BoundedReader) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dead letters and last runs, each its own bounded read; a failure is reported."""

    def describe(exc: Exception) -> str:
        return redact_text(f"{type(exc).__name__}: {exc}")[:300]

    try:
        counts, oldest = reader.call(lambda: (app.dlq.counts(), app.dlq.oldest_pending()))
        letters: dict[str, Any] = {
            "counts": {status.value: n for status, n in counts.items()},
            "oldest_pending": oldest,
            "error": None,
        }
    except Exception as exc:  # noqa: BLE001 - reported in the body: closed, busy, broken
        letters = {"counts": {}, "oldest_pending": None, "error": describe(exc)}
    try:
        last = reader.call(lambda: last_runs(app.store))
        runs: dict[str, Any] = {"last": [_decoded_counts(run) for run in last], "error": None}
    except Exception as exc:  # noqa: BLE001 - reported in the body
        runs = {"last": [], "error": describe(exc)}
    return letters, runs


# --------------------------------------------------------------------------- errors


class _CatchAll:
    """Any exception that escapes a route becomes 503 JSON with an id; the text is logged.

    Starlette's own last-resort handler answers 500 and re-raises, so this
    pure ASGI middleware sits inside it and never lets an exception out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            error_id = str(uuid.uuid4())
            logger.exception("health api request failed (id %s)", error_id)
            if not started:  # once headers are out, all we can do is end the response
                response = _error(503, "internal error", id=error_id)
                await response(scope, receive, send)


def _install_error_handlers(api: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        words = {401: "unauthorized", 404: "not found", 405: "method not allowed"}
        try:
            default = HTTPStatus(exc.status_code).phrase.lower()
        except ValueError:
            default = "error"
        response = _error(exc.status_code, words.get(exc.status_code, default))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Only where and why: the offending input is never echoed back.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return _error(422, "invalid request", detail=detail)

    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_middleware(_CatchAll)


def _token_guard(token: str) -> Callable[..., None]:
    expected = token.encode()
    bearer = HTTPBearer(
        auto_error=False,
        description="HEALTH_API_TOKEN; required when the API listens beyond loopback.",
    )

    def guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        given = credentials.credentials.encode() if credentials is not None else b""
        if not (given and hmac.compare_digest(given, expected)):
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})

    return guard


# --------------------------------------------------------------------------- factory


def health_response(snapshot: HealthSnapshot, interval_s: float) -> Response:
    """``GET /health``'s response for ``snapshot``: 200 pass/warn, 503 fail."""
    code = 503 if snapshot.status.wire == "fail" else 200
    return HealthJSONResponse(
        _safe(health_body(snapshot)),
        status_code=code,
        headers={"Cache-Control": f"max-age={max(0, int(interval_s))}"},
    )


def render_health(snapshot: HealthSnapshot, interval_s: float) -> Rendered:
    """:func:`health_response` as bytes for :class:`~biomem.health.fastpath.CachedHealth`."""
    response = health_response(snapshot, interval_s)
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
) -> FastAPI:
    """The health API over ``monitor`` and ``app``; the server decides ``require_token``.

    ``recovery`` (the daemon's recovery service) adds its recent actions to
    /health/detailed.

    Raises:
        ValueError: ``require_token`` without a ``token``.
    """
    if require_token and not token:
        raise ValueError("require_token needs a token")
    reader = reader if reader is not None else BoundedReader(timeout_s=2.0)
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
        # Never runs a check: a hung dependency cannot slow this. The server
        # serves the same response from fastpath.CachedHealth, rendered once
        # per snapshot; this route documents it and answers the rest.
        return health_response(monitor.snapshot(), monitor.interval_s)

    @api.get(
        "/health/detailed",
        response_model=DetailedBody,
        dependencies=guarded,
        responses={**locked, **invalid, **internal},
        summary="Every component with history, breakers, budgets, dead letters, errors, runs",
    )
    def detailed(history: int = Query(20, ge=0, le=_HISTORY_MAX)) -> Response:
        snapshot = monitor.snapshot()
        letters, runs = _store_reads(app, reader)
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
        snapshot = monitor.snapshot()
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
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    sources = StatusSources(
        monitor=monitor,
        app=app,
        reader=reader,
        alerts=alerts,
        recovery=_recent_actions(recovery) if recovery is not None else None,
    )
    add_status_routes(api, sources, token=token, require_token=require_token)
    return api
