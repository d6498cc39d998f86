"""`biomem health [SERVICE] [--json]`: the checks once, usable as an exec probe.

Exit 0 pass, 1 warn, 2 fail. While a daemon holds the store, the command asks
that daemon's /health endpoint instead of opening the store itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from biomem.cli_common import bootstrap, fail, guarded, opened
from biomem.config import Settings
from biomem.health.checks import build_checks
from biomem.health.model import HealthSnapshot
from biomem.health.monitor import HealthMonitor
from biomem.resilience.errors import StoreLockedError
from biomem.resilience.redact import redact_value

__all__ = ["health"]

_EXIT = {"pass": 0, "warn": 1, "fail": 2}
_SERVICES = ("postgresql", "duckdb", "ollama", "system_resources", "pipeline")


def _local(settings: Settings, service: str | None) -> dict[str, Any]:
    with opened(settings) as application:
        monitor = HealthMonitor(build_checks(application))
        snapshot = asyncio.run(monitor.run_once([service] if service else None))
    return _body(snapshot, service)


def _body(snapshot: HealthSnapshot, service: str | None) -> dict[str, Any]:
    components = {
        name: {
            "status": comp.status.wire,
            "state": comp.status.value,
            "output": comp.output,
            "measurements": {m.name: m.value for m in comp.measurements},
        }
        for name, comp in snapshot.components.items()
        if service is None or name == service
    }
    overall = snapshot.components[service].status if service is not None else snapshot.status
    return {"status": overall.wire, "state": overall.value, "components": components}


def _remote(settings: Settings, service: str | None) -> dict[str, Any]:
    """Ask the running daemon: /health, or /health/{service} (token when configured)."""
    host = settings.health.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - the daemon listens everywhere: ask loopback
        host = "127.0.0.1"
    headers = {}
    if settings.health.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.health.api_token.get_secret_value()}"
    path = f"/health/{service}" if service else "/health"
    response = httpx.get(
        f"http://{host}:{settings.health.port}{path}", headers=headers, timeout=5.0
    )
    data = response.json()
    if service:
        return {
            "status": data.get("wire", "fail"),
            "state": data.get("status"),
            "components": {service: {"state": data.get("status"), "output": data.get("output")}},
        }
    components: dict[str, Any] = {}
    for key, entries in data.get("checks", {}).items():
        name = key.split(":", 1)[0]
        worst = max((e.get("status", "pass") for e in entries), key=lambda w: _EXIT.get(w, 2))
        components.setdefault(name, {"state": worst, "output": None})
    return {"status": data.get("status", "fail"), "components": components}


@guarded
def health(
    service: Annotated[str | None, typer.Argument(help=f"One of {', '.join(_SERVICES)}.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run the health checks once: exit 0 pass, 1 warn, 2 fail."""
    settings = bootstrap()
    if service is not None and service not in _SERVICES:
        raise fail(f"unknown service {service!r}; known: {', '.join(_SERVICES)}", 2)
    try:
        body = _local(settings, service)
    except StoreLockedError:
        try:
            body = _remote(settings, service)
        except (httpx.HTTPError, ValueError) as exc:
            raise fail(
                f"the store is held by a running biomem whose health endpoint did not answer "
                f"({type(exc).__name__})",
                2,
            ) from None
        body["source"] = "daemon"
    body = redact_value("health", body)
    if as_json:
        typer.echo(json.dumps(body, default=str))
    else:
        _print(body)
    raise typer.Exit(_EXIT.get(str(body.get("status")), 2))


def _print(body: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"biomem health: {body.get('status')}")
    for column in ("component", "status", "output"):
        table.add_column(column)
    for name, comp in body.get("components", {}).items():
        state = comp.get("state", comp.get("status"))
        table.add_row(name, str(state), str(comp.get("output") or ""))
    console.print(table)
