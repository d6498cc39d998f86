"""HTTP routes of the daemon's recovery: its rules, its audit, and running a rule by hand.

The daemon holds the DuckDB file, so ``biomem recovery rules|history|run``
ask it over its health API instead of opening the store::

    GET  /recovery/rules                → 200 the switches and every rule with its state
    GET  /recovery/history?rule=&limit= → 200 {"decisions": [...]}, newest first
    POST /recovery/rules/{name}/run     {"dry_run": false} → 200 {"rule", "dry_run",
                                          "decisions": [...]}; 404 for an unknown rule

A run is an operator's (phase ``manual``): it ignores the trigger and the
cooldown and counts no attempt; RECOVERY_DRY_RUN still holds. A command it
starts (the Ollama restart) is not waited for: its end is a later decision in
the history. The request body is required and must be JSON, so a plain
cross-site form post from a browser cannot set recovery off on a loopback API
without a token. Errors are JSON ``{"error", ...}``: 404 unknown rule, 422 bad
input, 401 without the token (when HEALTH_API_TOKEN is set), 503 with
``Retry-After`` while the store or the engine is busy — never a 500.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from biomem.bounded import BoundedReader
from biomem.config import Settings
from biomem.config.recovery import RecoveryRule
from biomem.health._api_errors import _token_guard
from biomem.health._api_models import ErrorBody, InternalErrorBody, InvalidRequestBody
from biomem.health.server import check_token_policy
from biomem.recovery.engine import RecoveryBusyError, UnknownRuleError
from biomem.resilience.errors import BiomemError
from biomem.resilience.redact import redact_value

__all__ = [
    "DecisionBody",
    "HistoryBody",
    "RecoveryControl",
    "RulesBody",
    "RunBody",
    "RunRequest",
    "add_recovery_routes",
]

logger = logging.getLogger(__name__)

RUN_WAIT_S: Final = 10.0  # a run (or the rules' state) waits this long for an evaluation
_HISTORY_WAIT_S: Final = 5.0  # the audit read waits this long for the store
_RETRY_AFTER_S: Final = 5
_RULE_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RecoveryControl(Protocol):
    """What the routes need from the daemon's recovery (the RecoveryService)."""

    def rules(self, *, wait_s: float) -> dict[str, Any]: ...

    def history(self, *, limit: int, rule: str | None) -> list[dict[str, Any]]: ...

    def run_rule(self, name: str, *, dry_run: bool, wait_s: float) -> dict[str, Any]: ...


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Doc):
    """How to run the rule."""

    dry_run: bool = Field(
        default=False, description="render each action's exact plan and do nothing"
    )


class DecisionBody(_Doc):
    """One recovery decision, as the audit records it (redacted)."""

    id: int | None
    at: str = Field(description="RFC 3339; the first time, for repeated skips")
    last_at: str | None = Field(description="RFC 3339; the latest repeat")
    occurrences: int
    rule: str
    component: str
    action: str = Field(description="the action, or the rule's actions joined by '+'")
    target: str | None
    arguments: dict[str, Any]
    outcome: str = Field(description="done, failed, started (a command), or skipped")
    reason: str | None = Field(
        description="skipped: cooldown, attempt_limit, guard, dry_run, unavailable, disabled"
    )
    summary: str
    detail: dict[str, Any]
    trigger: str = Field(description="why the rule fired, or 'manual run'")
    phase: str = Field(description="act, escalate, resolve or manual")
    incident_id: str | None
    duration_ms: float | None


class HistoryBody(_Doc):
    decisions: list[DecisionBody]


class RunBody(_Doc):
    rule: str
    dry_run: bool = Field(description="whether the run only rendered its plans")
    decisions: list[DecisionBody]


class RuleStateBody(_Doc):
    attempts: list[float] = Field(description="epoch seconds of the attempts in the window")
    cooldown_until: float | None = Field(description="epoch seconds")
    incident_id: str | None
    escalated: bool


class RuleBody(RecoveryRule):
    """A rule in effect (see docs/config.example.toml), with the engine's state of it."""

    model_config = ConfigDict(extra="forbid")

    state: RuleStateBody | None


class RulesBody(_Doc):
    enabled: bool = Field(description="AUTOMATED_RECOVERY_ENABLED")
    dry_run: bool = Field(description="RECOVERY_DRY_RUN")
    max_unhealthy_share: float
    rules: list[RuleBody]


class UnknownRuleBody(_Doc):
    error: str
    known: list[str] | None = None


class BusyBody(_Doc):
    error: str
    id: str | None = None


def _json(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(redact_value("recovery", body), status_code=status_code)


def _busy(error: str, **extra: Any) -> JSONResponse:
    response = _json({"error": error, **extra}, 503)
    response.headers["Retry-After"] = str(_RETRY_AFTER_S)
    return response


def add_recovery_routes(
    api: FastAPI,
    control: RecoveryControl,
    settings: Settings,
    *,
    reader: BoundedReader | None = None,
) -> None:
    """Add the recovery routes to the health API, behind its bearer token.

    The token rule is the server's (:func:`~biomem.health.server.check_token_policy`):
    required beyond loopback, enforced on loopback too once HEALTH_API_TOKEN is set.

    Raises:
        ConfigurationError: the token policy is not met.
    """
    token = check_token_policy(settings)
    reader = reader if reader is not None else BoundedReader(timeout_s=_HISTORY_WAIT_S)
    guarded = [Depends(_token_guard(token))] if token else []
    common: dict[int | str, dict[str, Any]] = {
        503: {"model": BusyBody | InternalErrorBody, "description": "Busy; try again later"},
    }
    if token:
        common[401] = {"model": ErrorBody, "description": "Missing or wrong bearer token"}
    invalid: dict[int | str, dict[str, Any]] = {
        422: {"model": InvalidRequestBody, "description": "Invalid request"}
    }

    def bounded(read: Callable[[], Any], what: str) -> Any | JSONResponse:
        try:
            return reader.call(read)
        except TimeoutError:
            return _busy(f"the store is busy: {what} could not be read in time")
        except BiomemError as exc:
            error_id = str(uuid.uuid4())  # the log has the error; the answer only its id
            logger.error("recovery %s unread (id %s): %s", what, error_id, type(exc).__name__)
            return _busy(f"the store cannot answer now ({what})", id=error_id)

    @api.get(
        "/recovery/rules",
        response_model=RulesBody,
        dependencies=guarded,
        responses=common,
        summary="The recovery switches and every rule in effect, with its state",
    )
    def recovery_rules() -> Response:
        try:
            return _json(control.rules(wait_s=RUN_WAIT_S))
        except RecoveryBusyError as exc:
            return _busy(str(exc))

    @api.get(
        "/recovery/history",
        response_model=HistoryBody,
        dependencies=guarded,
        responses={**common, **invalid},
        summary="What recovery decided and why, newest first",
    )
    def recovery_history(
        rule: str | None = Query(None, pattern=_RULE_PATTERN, max_length=63),
        limit: int = Query(50, ge=1, le=10_000),
    ) -> Response:
        found = bounded(lambda: control.history(limit=limit, rule=rule), "the audit")
        if isinstance(found, JSONResponse):
            return found
        return _json({"decisions": found})

    @api.post(
        "/recovery/rules/{name}/run",
        response_model=RunBody,
        dependencies=guarded,
        responses={
            **common,
            **invalid,
            404: {"model": UnknownRuleBody, "description": "No rule has this name"},
        },
        summary="Run a rule's actions now (or only render them), whatever its trigger says",
    )
    def run_recovery_rule(name: str, request: RunRequest) -> Response:
        try:
            ran = control.run_rule(name, dry_run=request.dry_run, wait_s=RUN_WAIT_S)
        except UnknownRuleError as exc:
            return _json({"error": str(exc), "known": list(exc.known)}, 404)
        except RecoveryBusyError as exc:
            return _busy(str(exc))
        return _json(ran)
