"""`biomem dlq`: list, show, replay and purge dead letters."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import typer

from biomem.cli_common import EXIT_CONFIG, EXIT_FAILED, bootstrap, fail, guarded, opened
from biomem.orchestrator import Orchestrator
from biomem.resilience.deadletter import DeadLetter, DeadLetterStatus

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters: work that failed and waits to be replayed.",
    no_args_is_help=True,
)

_STATUSES = ", ".join(s.value for s in DeadLetterStatus)


def _status(value: str | None) -> DeadLetterStatus | None:
    if value is None:
        return None
    try:
        return DeadLetterStatus(value)
    except ValueError:
        raise fail(f"--status {value!r}: accepts one of {_STATUSES}", EXIT_CONFIG) from None


def _plain(letter: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    data = asdict(letter)
    data["status"] = letter.status.value
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    if not full:
        data.pop("stack", None)
        data.pop("payload", None)
    return data


@dlq_app.command("list")
@guarded
def list_letters(
    status: Annotated[str | None, typer.Option(help=f"One of {_STATUSES}.")] = None,
    operation: Annotated[str | None, typer.Option(help="Only this operation.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """List dead letters, with counts by status."""
    settings = bootstrap()
    with opened(settings) as application:
        letters = application.dlq.list(_status(status), operation, limit)
        counts = application.dlq.counts()
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(_plain(letter)))
        return
    typer.echo(", ".join(f"{s.value} {counts.get(s, 0)}" for s in DeadLetterStatus))
    for letter in letters:
        typer.echo(
            f"{letter.id}  {letter.status.value:<10} {letter.operation:<16} "
            f"attempts {letter.attempts}  next {letter.next_attempt_at:%Y-%m-%d %H:%M:%S}  "
            f"{letter.error_class}: {letter.message[:80]}"
        )


@dlq_app.command("show")
@guarded
def show_letter(letter_id: Annotated[str, typer.Argument(help="The letter's id.")]) -> None:
    """Show one dead letter whole (payload and stack are redacted)."""
    settings = bootstrap()
    with opened(settings) as application:
        letter = application.dlq.get(letter_id)
    if letter is None:
        raise fail(f"no dead letter {letter_id}", EXIT_FAILED)
    typer.echo(json.dumps(_plain(letter, full=True), indent=2))


@dlq_app.command("replay")
@guarded
def replay_letters(
    ids: Annotated[list[str] | None, typer.Argument(help="Letter ids (or --all).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every matching letter.")] = False,
    operation: Annotated[str | None, typer.Option(help="Only this operation.")] = None,
    status: Annotated[str | None, typer.Option(help="pending (default) or dead.")] = "pending",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would run.")] = False,
    rate: Annotated[float | None, typer.Option(min=0.01, help="At most N per second.")] = None,
) -> None:
    """Replay dead letters now: their real operations run again."""
    settings = bootstrap()
    if not ids and not replay_all:
        raise fail("give letter ids or --all", EXIT_CONFIG)
    with opened(settings) as application:
        # The orchestrator registers the replayable operations.
        Orchestrator(application)
        report = application.dlq.replay(
            ids or None,
            operation=operation,
            status=_status(status),
            dry_run=dry_run,
            rate_per_s=rate,
        )
    typer.echo(
        f"{'would replay' if dry_run else 'replayed'} {len(report.selected)}: "
        f"recovered {len(report.recovered)}, failed {len(report.failed)}, "
        f"dead {len(report.dead)}, skipped {len(report.skipped)}"
    )
    if report.failed or report.dead:
        raise typer.Exit(EXIT_FAILED)


@dlq_app.command("purge")
@guarded
def purge_letters(
    status: Annotated[str, typer.Option(help="dead (default) or recovered.")] = "dead",
    older_than_days: Annotated[
        float | None, typer.Option("--older-than", min=0, help="Only letters older than N days.")
    ] = None,
) -> None:
    """Delete dead (or recovered) letters, optionally only old ones."""
    settings = bootstrap()
    chosen = _status(status)
    if chosen not in (DeadLetterStatus.DEAD, DeadLetterStatus.RECOVERED):
        raise fail("purge takes --status dead or recovered: pending work is never purged", 2)
    age = timedelta(days=older_than_days) if older_than_days is not None else None
    with opened(settings) as application:
        removed = application.dlq.purge(chosen, age)
    typer.echo(f"purged {removed} {chosen.value} letters")
