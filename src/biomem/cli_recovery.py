"""`biomem recovery`: the rules in effect, the audit of what recovery did, and running a rule.

``rules`` and ``history`` read; ``run RULE`` acts on *this* process's
resources and the shared ones (the store file, the dead letters, the log
file, a configured restart command). The daemon's own resources — its
PostgreSQL pool, its stage runs and schedules — are its engine's to act on;
like every command that opens the store, these wait until the daemon has
stopped (DuckDB has one writer).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from biomem.cli_common import EXIT_CONFIG, EXIT_FAILED, bootstrap, fail, guarded, opened
from biomem.orchestrator import Orchestrator
from biomem.recovery import (
    AuditRecord,
    RecoveryAudit,
    UnknownRuleError,
    describe_trigger,
    manual_engine,
)
from biomem.resilience.errors import BiomemError

__all__ = ["recovery_app"]

recovery_app = typer.Typer(
    name="recovery",
    help="Automated recovery: its rules, what it did and why, and running a rule by hand.",
    no_args_is_help=True,
)


def _state_line(state: Any, now: float) -> str:
    parts = [f"{len(state.attempts)} attempt(s) in the window"]
    if state.cooldown_until is not None and state.cooldown_until > now:
        until = datetime.fromtimestamp(state.cooldown_until, UTC)
        parts.append(f"cooling down until {until:%Y-%m-%d %H:%M:%S} UTC")
    if state.incident_id:
        parts.append(
            f"incident {state.incident_id} open" + (", escalated" if state.escalated else "")
        )
    return "; ".join(parts)


@recovery_app.command("rules")
@guarded
def list_rules(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """List the rules in effect (defaults with the TOML file's overrides), with their state."""
    settings = bootstrap()
    rules = settings.recovery.active_rules()
    states: dict[str, Any] = {}
    try:
        with opened(settings) as application:
            states = RecoveryAudit(application.store).load_states()
    except BiomemError as exc:  # the daemon holds the store: rules without state
        typer.echo(f"(state unavailable: {exc})", err=True)
    now = datetime.now(UTC).timestamp()
    if as_json:
        for rule in rules:
            item = rule.model_dump(exclude={"action"})
            saved = states.get(rule.name)
            item["state"] = (
                None
                if saved is None
                else {
                    "attempts": list(saved.attempts),
                    "cooldown_until": saved.cooldown_until,
                    "incident_id": saved.incident_id,
                    "escalated": saved.escalated,
                }
            )
            typer.echo(json.dumps(item))
        return
    recovery = settings.recovery
    typer.echo(
        f"automated recovery {'enabled' if recovery.enabled else 'DISABLED'}"
        + (", dry run" if recovery.dry_run else "")
        + f"; guard: hold back above {recovery.max_unhealthy_share:.0%} of components down"
    )
    for rule in rules:
        saved = states.get(rule.name)
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
    with opened(settings) as application:
        rows = RecoveryAudit(application.store).history(limit=limit, rule=rule)
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row, default=str))
            continue
        outcome = row["outcome"] if row["outcome"] != "skipped" else f"skipped ({row['reason']})"
        repeats = (
            f" ×{row['occurrences']} until {row['last_at'][:19]}" if row["occurrences"] > 1 else ""
        )
        typer.echo(
            f"{row['at'][:19]}  {row['rule']:<28} {row['action']:<24} {outcome}{repeats}: "
            f"{row['summary']}"
        )
    if not rows and not as_json:
        typer.echo("no recovery decisions recorded")


def _print(record: AuditRecord, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(record.as_dict(), default=str))
        return
    outcome = record.outcome if record.outcome != "skipped" else f"skipped ({record.reason})"
    typer.echo(f"{record.action}: {outcome}: {record.summary}")
    if record.target:
        arguments = json.dumps(dict(record.arguments), default=str, ensure_ascii=False)
        typer.echo(f"  target {record.target}; arguments {arguments}")


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

    Exits 0 when every action was done (or rendered, or unavailable here), 1 when one failed.
    """
    settings = bootstrap()
    with opened(settings) as application:
        # The orchestrator registers the dead letters' replay handlers.
        engine = manual_engine(application, Orchestrator(application))
        try:
            records = engine.run_rule(rule, dry_run=dry_run or settings.recovery.dry_run)
        except UnknownRuleError as exc:
            raise fail(str(exc), EXIT_CONFIG) from None
    for record in records:
        _print(record, as_json=as_json)
    if any(r.outcome == "failed" for r in records):
        raise typer.Exit(EXIT_FAILED)
