"""The health API's bodies: what each endpoint says, built from the snapshot, breakers and store."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from fastapi.responses import JSONResponse

import biomem
from biomem.app import App
from biomem.health._api_models import (
    _DESCRIPTION,
)
from biomem.health.model import ComponentHealth, HealthSnapshot, Status
from biomem.health.monitor import HealthMonitor
from biomem.metrics import BoundedReader
from biomem.resilience.redact import redact_text, redact_value
from biomem.store.runs import last_runs

logger = logging.getLogger("biomem.health.api")


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


def _store_reads(
    app: App, reader: BoundedReader, letters_reader: BoundedReader | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dead letters and last runs, each its own bounded read; a failure is reported.

    With PostgreSQL configured the dead letters are read from it too: through
    ``letters_reader``, so that a PostgreSQL slow to answer (its reads left
    running past their timeout) never takes the slots the runs read needs.
    """
    letters_from = letters_reader if letters_reader is not None else reader

    def describe(exc: Exception) -> str:
        return redact_text(f"{type(exc).__name__}: {exc}")[:300]

    try:
        counts, oldest = letters_from.call(lambda: (app.dlq.counts(), app.dlq.oldest_pending()))
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
