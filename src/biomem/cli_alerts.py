"""`biomem alerts`: list alerts, silences and undelivered notifications; silence; unsilence.

A running daemon holds the DuckDB file, and only it knows which alerts are
active, so every command first asks the daemon's health API at
HEALTH_HTTP_HOST:HEALTH_HTTP_PORT (with HEALTH_API_TOKEN when set). When
nothing answers there, no daemon runs: the command opens the store itself,
where silences and the outbox live (a silence added so is loaded by the
next daemon). A daemon running without HTTP endpoints keeps the file locked,
and the command says so in one line.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from pydantic import ValidationError

from biomem.alerts import NotificationStatus, Outbox, SilenceStore
from biomem.alerts.routes import SilenceRequest
from biomem.alerts.silences import new_silence
from biomem.cli_common import EXIT_CONFIG, EXIT_FAILED, bootstrap, fail, guarded
from biomem.cli_daemon import find_daemon, unexpected
from biomem.config import Settings
from biomem.store import DuckDBStore

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    name="alerts",
    help="Alerts: what fires, what is silenced, what waits to be delivered.",
    no_args_is_help=True,
)


def _open_store(settings: Settings) -> DuckDBStore:
    # StoreLockedError (a daemon without HTTP endpoints) becomes one line via @guarded.
    return DuckDBStore.open(settings.store.path)


def _from_store(settings: Settings) -> dict[str, Any]:
    if not settings.store.path.exists():
        return {"active": [], "recent": [], "undelivered": 0, "silences": [], "notifications": []}
    now = datetime.now(UTC)
    with _open_store(settings) as store:
        silences = SilenceStore(store)
        silences.ensure_schema()
        outbox = Outbox(store)
        outbox.ensure_schema()
        active = [s.as_dict(now) for s in silences.active(now)]
        counts = outbox.counts()
        notes = [n.as_dict() for n in outbox.undelivered(100)]
    undelivered = counts[NotificationStatus.PENDING] + counts[NotificationStatus.FAILED]
    return {
        "active": [],
        "recent": [],
        "undelivered": undelivered,
        "silences": active,
        "notifications": notes,
    }


def _print_listing(data: dict[str, Any], source: str) -> None:
    if source == "store":
        typer.echo("no daemon answers: active alerts are known only to a running daemon")
    active = data.get("active", [])
    typer.echo(f"alerts: {len(active)}")
    for alert in active:
        labels = alert.get("labels", {})
        rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
        summary = alert.get("annotations", {}).get("summary", "")
        typer.echo(
            f"  {alert.get('state', ''):<10} {labels.get('alertname', '?')} {{{rest}}}"
            f" since {alert.get('startsAt', '')}" + (f": {summary}" if summary else "")
        )
    silences = data.get("silences", [])
    typer.echo(f"silences: {len(silences)}")
    for s in silences:
        matchers = ", ".join(f"{k}={v}" for k, v in sorted(s.get("matchers", {}).items()))
        by = f" by {s['createdBy']}" if s.get("createdBy") else ""
        comment = f": {s['comment']}" if s.get("comment") else ""
        typer.echo(f"  {s.get('id')}  {{{matchers}}} until {s.get('endsAt')}{by}{comment}")
    notes = data.get("notifications", [])
    typer.echo(f"undelivered notifications: {data.get('undelivered', len(notes))}")
    for n in notes:
        error = f"  last error: {n['lastError']}" if n.get("lastError") else ""
        typer.echo(
            f"  {n.get('id')}  {n.get('status'):<8} {n.get('kind'):<8} to {n.get('receiver')}"
            f"  attempts {n.get('attempts')}  next {n.get('nextAttemptAt')}{error}"
        )


@alerts_app.command("list")
@guarded
def list_alerts(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Active alerts, silences and undelivered notifications."""
    settings = bootstrap()
    daemon = find_daemon(settings)
    if daemon.base is not None:
        response = daemon.request("GET", "/health/alerts")
        if response.status_code != 200:
            raise unexpected(response)
        data, source = response.json(), "daemon"
    else:
        data, source = _from_store(settings), "store"
    if as_json:
        typer.echo(json.dumps({"source": source, **data}))
        return
    _print_listing(data, source)


def _matchers(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise fail(f"matcher {item!r}: write label=value or label=~regex", EXIT_CONFIG)
        # label=~regex (as in Prometheus) is the regex form, written "=~regex" as a value.
        out[name.strip()] = "=" + value if value.startswith("~") else value
    return out


def _request(
    matchers: list[str], duration: str | None, until: str | None, comment: str, created_by: str
) -> SilenceRequest:
    body: dict[str, Any] = {
        "matchers": _matchers(matchers),
        "comment": comment,
        "created_by": created_by,
    }
    if duration is not None:
        body["duration"] = duration
    if until is not None:
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            raise fail(f"--until {until!r} is not an ISO 8601 time", EXIT_CONFIG) from None
        body["ends_at"] = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if duration is None and until is None:
        body["duration"] = "2h"
    try:
        return SilenceRequest.model_validate(body)
    except ValidationError as exc:
        raise fail(f"cannot silence: {_reason(exc)}", EXIT_CONFIG) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (some containers)
        return ""


def _reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc[:1] == ["matchers"] and loc[-1:] == ["[key]"]:
        return f"matcher label {loc[1]!r} is not a label name (letters, digits and _)"
    reason = error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(loc[:1])}: {reason}" if loc else reason


def _echo_silence(silence: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        typer.echo(json.dumps(silence))
    else:
        typer.echo(f"{verb} {silence['id']} until {silence['endsAt']}")


@alerts_app.command("silence")
@guarded
def silence(
    matchers: Annotated[
        list[str], typer.Argument(help="label=value or label=~regex; all must match.")
    ],
    duration: Annotated[
        str | None, typer.Option(help='How long: "30m", "2h", "1d" (default 2h).')
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until this ISO 8601 time instead.")] = None,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    created_by: Annotated[
        str | None, typer.Option("--created-by", help="Who (default: your user name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the silence as JSON.")] = False,
) -> None:
    """Mute alerts whose labels match, for a while; prints the silence's id."""
    settings = bootstrap()
    if duration is not None and until is not None:
        raise fail("give --duration or --until, not both", EXIT_CONFIG)
    request = _request(matchers, duration, until, comment, created_by or _user())
    daemon = find_daemon(settings)
    if daemon.base is not None:
        response = daemon.request(
            "POST", "/health/alerts/silences", request.model_dump(mode="json", exclude_none=True)
        )
        if response.status_code == 422:
            detail = response.json().get("detail") or [{}]
            raise fail(f"cannot silence: {detail[0].get('msg', 'invalid')}", EXIT_CONFIG)
        if response.status_code != 201:
            raise unexpected(response)
        _echo_silence(response.json(), as_json, "silenced")
        return
    now = datetime.now(UTC)
    try:
        made = new_silence(
            request.matchers,
            ends_at=request.end(now),
            now=now,
            created_by=request.created_by,
            comment=request.comment,
        )
    except ValueError as exc:
        raise fail(f"cannot silence: {exc}", EXIT_CONFIG) from None
    with _open_store(settings) as store:
        silences = SilenceStore(store)
        silences.ensure_schema()
        silences.add(made)
    _echo_silence(made.as_dict(now), as_json, "silenced")


@alerts_app.command("unsilence")
@guarded
def unsilence(
    silence_id: Annotated[str, typer.Argument(help="The silence's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the silence as JSON.")] = False,
) -> None:
    """End a silence now."""
    settings = bootstrap()
    daemon = find_daemon(settings)
    if daemon.base is not None:
        path = "/health/alerts/silences/" + quote(silence_id, safe="")
        response = daemon.request("DELETE", path)
        if response.status_code == 404:
            raise fail(f"no active silence {silence_id}", EXIT_FAILED)
        if response.status_code != 200:
            raise unexpected(response)
        _echo_silence(response.json(), as_json, "ended")
        return
    now = datetime.now(UTC)
    with _open_store(settings) as store:
        silences = SilenceStore(store)
        silences.ensure_schema()
        ended = silences.expire(silence_id, now=now)
    if ended is None:
        raise fail(f"no active silence {silence_id}", EXIT_FAILED)
    _echo_silence(ended.as_dict(now), as_json, "ended")
