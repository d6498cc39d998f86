"""`biomem recovery`: the rules in effect, the audit of what recovery did, and running a rule.

A running daemon holds the DuckDB file and runs the engine, so every command
first asks the daemon's health API (found as :mod:`biomem.cli_daemon` finds
it, with HEALTH_API_TOKEN when set): ``rules`` shows the daemon's rules and
the state its engine holds, ``history`` its audit, and ``run RULE`` runs the
rule *in the daemon* — on its PostgreSQL pool, its stage runs and schedules,
its store. A command the run starts there (the Ollama restart) is not waited
for: its end is a later line of ``history``.

When nothing answers, no daemon runs: the command opens the store itself and
``run`` acts on this process's resources and the shared ones (the store
file, the dead letters, the log file, a configured restart command), waiting
for a command it starts to end (terminating it past its deadline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from biomem.cli_common import EXIT_CONFIG, EXIT_FAILED, bootstrap, fail, guarded, opened
from biomem.cli_daemon import Daemon, find_daemon, unexpected
from biomem.config import Settings
from biomem.config.recovery import RecoveryRule
from biomem.orchestrator import Orchestrator
from biomem.recovery import (
    PersistedState,
    RecoveryAudit,
    UnknownRuleError,
    describe_trigger,
    manual_engine,
    rules_document,
)
from biomem.resilience.errors import BiomemError

__all__ = ["recovery_app"]

recovery_app = typer.Typer(
    name="recovery",
    help="Automated recovery: its rules, what it did and why, and running a rule by hand.",
    no_args_is_help=True,
)

# A run in the daemon waits for an evaluation in progress (10 s at most), then runs
# the actions: a checkpoint, a reopen or a stage's cancellation may take a while.
_RUN_TIMEOUT_S = 180.0


def _state_line(state: Mapping[str, Any], now: float) -> str:
    parts = [f"{len(state.get('attempts') or [])} attempt(s) in the window"]
    cooldown = state.get("cooldown_until")
    if cooldown is not None and cooldown > now:
        until = datetime.fromtimestamp(cooldown, UTC)
        parts.append(f"cooling down until {until:%Y-%m-%d %H:%M:%S} UTC")
    if state.get("incident_id"):
        parts.append(
            f"incident {state['incident_id']} open" + (", escalated" if state["escalated"] else "")
        )
    return "; ".join(parts)


def _local_rules(settings: Settings) -> dict[str, Any]:
    states: dict[str, PersistedState] = {}
    try:
        with opened(settings) as application:
            states = RecoveryAudit(application.store).load_states()
    except BiomemError as exc:  # a daemon without HTTP endpoints holds the store
        typer.echo(f"(state unavailable: {exc})", err=True)
    recovery = settings.recovery
    return rules_document(recovery, recovery.active_rules(), states)


def _answer(daemon: Daemon, method: str, path: str, **kwargs: Any) -> Any:
    response = daemon.request(method, path, **kwargs)
    if response.status_code != 200:
        raise unexpected(response)
    return response.json()


@recovery_app.command("rules")
@guarded
def list_rules(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """List the rules in effect (defaults with the TOML file's overrides), with their state.

    While a daemon runs: its rules and the state its engine holds now.
    """
    settings = bootstrap()
    daemon = find_daemon(settings)
    document = (
        _answer(daemon, "GET", "/recovery/rules")
        if daemon.base is not None
        else _local_rules(settings)
    )
    if as_json:
        for item in document["rules"]:
            typer.echo(json.dumps(item))
        return
    typer.echo(
        f"automated recovery {'enabled' if document['enabled'] else 'DISABLED'}"
        + (", dry run" if document["dry_run"] else "")
        + f"; guard: hold back above {document['max_unhealthy_share']:.0%} of components down"
    )
    now = datetime.now(UTC).timestamp()
    for item in document["rules"]:
        saved = item.get("state")
        rule = RecoveryRule.model_validate({k: v for k, v in item.items() if k != "state"})
        typer.echo(
            f"{rule.name}{'' if rule.enabled else ' (disabled)'}: when {describe_trigger(rule)}"
            f" → {', '.join(rule.actions)}"
        )
        limits = (
            f"  cooldown {rule.cooldown_seconds:g} s (+{rule.cooldown_jitter:.0%} jitter),"
            f" {rule.max_attempts} attempt(s) per {rule.window_seconds:g} s"
        )
        if rule.escalation_actions:
            limits += f"; then {', '.join(rule.escalation_actions)}"
        if rule.resolve_actions:
            limits += f"; when over: {', '.join(rule.resolve_actions)}"
        typer.echo(limits)
        if saved is not None:
            typer.echo(f"  state: {_state_line(saved, now)}")


@recovery_app.command("history")
@guarded
def history(
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """What recovery decided and why, newest first (repeated skips counted on one line)."""
    settings = bootstrap()
    daemon = find_daemon(settings)
    if daemon.base is not None:
        params: dict[str, Any] = {"limit": limit}
        if rule is not None:
            params["rule"] = rule
        response = daemon.request("GET", "/recovery/history", params=params)
        if response.status_code == 422:
            raise fail(f"--rule {rule!r} is not a rule name", EXIT_CONFIG)
        if response.status_code != 200:
            raise unexpected(response)
        rows = list(response.json()["decisions"])
    else:
        with opened(settings) as application:
            rows = RecoveryAudit(application.store).history(limit=limit, rule=rule)
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row, default=str))
            continue
        repeats = (
            f" ×{row['occurrences']} until {row['last_at'][:19]}" if row["occurrences"] > 1 else ""
        )
        typer.echo(
            f"{row['at'][:19]}  {row['rule']:<28} {row['action']:<24} {_outcome(row)}{repeats}: "
            f"{row['summary']}"
        )
    if not rows and not as_json:
        typer.echo("no recovery decisions recorded")


def _outcome(row: Mapping[str, Any]) -> str:
    return str(row["outcome"]) if row["outcome"] != "skipped" else f"skipped ({row['reason']})"


def _print(row: Mapping[str, Any], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(dict(row), default=str))
        return
    typer.echo(f"{row['action']}: {_outcome(row)}: {row['summary']}")
    if row.get("target"):
        arguments = json.dumps(dict(row.get("arguments") or {}), default=str, ensure_ascii=False)
        typer.echo(f"  target {row['target']}; arguments {arguments}")


def _run_in_daemon(daemon: Daemon, rule: str, dry_run: bool) -> list[dict[str, Any]]:
    response = daemon.request(
        "POST",
        f"/recovery/rules/{quote(rule, safe='')}/run",
        {"dry_run": dry_run},
        timeout_s=_RUN_TIMEOUT_S,
    )
    if response.status_code == 404:
        error = response.json().get("error") or f"no recovery rule {rule!r}"
        raise fail(str(error), EXIT_CONFIG)
    if response.status_code != 200:
        raise unexpected(response)
    return list(response.json()["decisions"])


@recovery_app.command("run")
@guarded
def run_rule(
    rule: Annotated[str, typer.Argument(help="The rule's name (see `biomem recovery rules`).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say exactly what would be done; do nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Run RULE's actions now, whatever its trigger and cooldown say (audited as manual).

    While a daemon runs, the rule runs in the daemon. Exits 0 when every action was done
    (or started, rendered, or unavailable), 1 when one failed.
    """
    settings = bootstrap()
    dry = dry_run or settings.recovery.dry_run
    daemon = find_daemon(settings)
    if daemon.base is not None:
        rows = _run_in_daemon(daemon, rule, dry)
    else:
        with opened(settings) as application:
            # The orchestrator registers the dead letters' replay handlers.
            engine = manual_engine(application, Orchestrator(application))
            try:
                records = engine.run_rule(rule, dry_run=dry)
            except UnknownRuleError as exc:
                raise fail(str(exc), EXIT_CONFIG) from None
        rows = [record.as_dict() for record in records]
    for row in rows:
        _print(row, as_json=as_json)
    if daemon.base is not None and not as_json and any(r["outcome"] == "started" for r in rows):
        typer.echo("(the daemon runs the command: its end shows in `biomem recovery history`)")
    if any(row["outcome"] == "failed" for row in rows):
        raise typer.Exit(EXIT_FAILED)
