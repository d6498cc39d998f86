"""The health API's documents: the pydantic models /openapi.json describes, and its media type."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("biomem.health.api")

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
