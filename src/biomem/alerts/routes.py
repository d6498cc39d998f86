"""HTTP routes that change alerting: add and end silences while the daemon runs.

The daemon holds the DuckDB file, so ``biomem alerts silence|unsilence``
asks it over HTTP instead of opening the store::

    POST   /health/alerts/silences       {"matchers": {...}, "duration": "2h" | "ends_at": ...,
                                          "comment": "...", "created_by": "..."}  → 201 silence
    DELETE /health/alerts/silences/{id}  → 200 the silence, ended now; 404 when none is active

Bad input is answered 422 with the API's usual ``{"error", "detail"}`` body
(never echoing the input), a store that cannot record the silence 503
``{"error", "id"}``. Bodies pass through the redactor. The health API adds
these routes (with its bearer-token guard) only when it is given a
:class:`SilenceControl`.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from biomem.alerts.model import Matchers
from biomem.config.environment import UNIT_SECONDS
from biomem.resilience.errors import BiomemError
from biomem.resilience.redact import redact_value

__all__ = [
    "MAX_SILENCE",
    "SilenceBody",
    "SilenceControl",
    "SilenceNotFound",
    "SilenceRequest",
    "add_silence_routes",
    "parse_duration",
]

logger = logging.getLogger(__name__)

MAX_SILENCE: Final = timedelta(days=366)


class SilenceControl(Protocol):
    """What the routes need from the alerting service."""

    def add_silence(
        self, *, matchers: Mapping[str, str], ends_at: datetime, comment: str, created_by: str
    ) -> dict[str, Any]: ...

    def remove_silence(self, silence_id: str) -> dict[str, Any] | None: ...


def parse_duration(value: str | float) -> timedelta:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` or seconds, > 0 and ≤ 366 days.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is text such as 2h, or seconds")
    if isinstance(value, str):
        text = value.strip().lower()
        unit = UNIT_SECONDS.get(text[-1:]) if text else None
        try:
            seconds = float(text[:-1]) * unit if unit is not None else float(text)
        except ValueError:
            raise ValueError('a duration such as "90s", "30m", "2h", "1d" or seconds') from None
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("a duration must be above 0")
    if seconds > MAX_SILENCE.total_seconds():
        raise ValueError("a silence lasts at most 366 days")
    return timedelta(seconds=seconds)


def _text(value: str) -> str:
    # Lone surrogates cannot be stored (or sent) as UTF-8; NUL ends strings in C.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_text)]
_LABEL_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
LabelName = Annotated[str, Field(pattern=_LABEL_PATTERN, max_length=100)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SilenceRequest(_Doc):
    """A new silence: matchers, and how long (``duration``) or until when (``ends_at``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["duration"], "not": {"required": ["ends_at"]}},
                {"required": ["ends_at"], "not": {"required": ["duration"]}},
            ]
        },
    )

    matchers: Annotated[
        dict[LabelName, Annotated[Text, Field(max_length=500)]],
        Field(
            min_length=1,
            max_length=20,
            description='label → "value" (exact) or "=~regex" (full match); all must match',
            # Only label names as keys (pydantic would leave other keys undescribed).
            json_schema_extra={
                "additionalProperties": False,
                "propertyNames": {"pattern": _LABEL_PATTERN, "maxLength": 100},
            },
        ),
    ]
    duration: (
        Annotated[str, Field(pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*[smhd]?\s*$", max_length=40)]
        | Annotated[float, Field(gt=0, le=MAX_SILENCE.total_seconds())]
        | None
    ) = Field(default=None, description='how long, e.g. "2h", "30m", "1d" or seconds')
    ends_at: AwareDatetime | None = Field(default=None, description="when it ends (ISO 8601)")
    comment: Annotated[Text, Field(max_length=1000)] = ""
    created_by: Annotated[Text, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _check(self) -> SilenceRequest:
        Matchers(self.matchers)  # raises ValueError on a bad label or regex
        if (self.duration is None) == (self.ends_at is None):
            raise ValueError("give either duration or ends_at")
        if self.duration is not None:
            parse_duration(self.duration)
        return self

    def end(self, now: datetime) -> datetime:
        """When the silence ends, counted from ``now`` for a duration.

        Raises:
            ValueError: an end that is not in the future, or too far in it.
        """
        if self.duration is not None:
            return now + parse_duration(self.duration)
        assert self.ends_at is not None
        ends_at = self.ends_at.astimezone(UTC)
        if ends_at <= now:
            raise ValueError("ends_at must be in the future")
        if ends_at - now > MAX_SILENCE:
            raise ValueError("a silence lasts at most 366 days")
        return ends_at


class SilenceBody(_Doc):
    id: str
    matchers: dict[str, str]
    created_by: str = Field(alias="createdBy")
    comment: str
    starts_at: str = Field(alias="startsAt", description="RFC 3339")
    ends_at: str = Field(alias="endsAt", description="RFC 3339")
    status: str = Field(description="active or expired")


class SilenceNotFound(_Doc):
    error: str


def _invalid(message: str, where: str) -> JSONResponse:
    detail = [{"loc": ["body", where], "msg": message, "type": "value_error"}]
    return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)


def _unavailable(exc: BiomemError) -> JSONResponse:
    error_id = str(uuid.uuid4())
    logger.error("silence not recorded (id %s): %s", error_id, type(exc).__name__)
    body = {"error": "the store cannot record silences now", "id": error_id}
    return JSONResponse(body, status_code=503)


def add_silence_routes(
    api: FastAPI,
    control: SilenceControl,
    *,
    dependencies: Sequence[Depends],
    responses: Mapping[int | str, dict[str, Any]],
) -> None:
    """Add POST /health/alerts/silences and DELETE /health/alerts/silences/{silence_id}."""

    @api.post(
        "/health/alerts/silences",
        status_code=201,
        response_model=SilenceBody,
        dependencies=list(dependencies),
        responses=dict(responses),
        summary="Silence alerts whose labels match, for a duration or until a time",
    )
    def add_silence(request: SilenceRequest) -> Response:
        now = datetime.now(UTC)
        try:
            ends_at = request.end(now)
        except ValueError as exc:
            return _invalid(str(exc), "ends_at")
        try:
            silence = control.add_silence(
                matchers=request.matchers,
                ends_at=ends_at,
                comment=request.comment,
                created_by=request.created_by,
            )
        except ValueError as exc:
            return _invalid(str(exc), "matchers")
        except BiomemError as exc:
            return _unavailable(exc)
        return JSONResponse(redact_value("alerts", silence), status_code=201)

    @api.delete(
        "/health/alerts/silences/{silence_id}",
        response_model=SilenceBody,
        dependencies=list(dependencies),
        responses={
            **responses,
            404: {"model": SilenceNotFound, "description": "No active silence has this id"},
        },
        summary="End a silence now",
    )
    def remove_silence(silence_id: str) -> Response:
        try:
            uuid.UUID(silence_id)
        except ValueError:  # not an id this API hands out: nothing to look up
            return JSONResponse({"error": "no active silence with this id"}, status_code=404)
        try:
            ended = control.remove_silence(silence_id)
        except BiomemError as exc:
            return _unavailable(exc)
        if ended is None:
            return JSONResponse({"error": "no active silence with this id"}, status_code=404)
        return JSONResponse(redact_value("alerts", ended))
