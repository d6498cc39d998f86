"""`biomem dlq`: list, show, replay and purge dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, TypeVar

import typer

from biomem.cli_common import EXIT_CONFIG, EXIT_FAILED, bootstrap, fail, guarded, opened
from biomem.cli_values import (
    AGE_ACCEPTS,
    FILTER_ACCEPTS,
    RATE_ACCEPTS,
    LetterFilter,
    OptionValueError,
    UsageError,
    parse_age,
    parse_filters,
    parse_rate,
)
from biomem.orchestrator import Orchestrator
from biomem.resilience.deadletter import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStatus,
    ReplayReport,
)

__all__ = ["ReplayRequest", "dlq_app", "replay_request", "run_replay"]

dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters: work that failed and waits to be replayed.",
    no_args_is_help=True,
)

_STATUSES = ", ".join(s.value for s in DeadLetterStatus)
_FILTER_HELP = f"Only matching letters: {FILTER_ACCEPTS}, e.g. component=postgresql."
T = TypeVar("T")


def _parse_status(value: str | None) -> DeadLetterStatus | None:
    if value is None:
        return None
    try:
        return DeadLetterStatus(value.strip().lower())
    except ValueError:
        raise OptionValueError("--status", value, f"one of {_STATUSES}") from None


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


def _checked(parse: Callable[[], T]) -> T:
    """Run an option parser; a bad value is one line and exit 2, before anything opens."""
    try:
        return parse()
    except UsageError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequest:
    """What `biomem dlq replay` was asked to do, its options parsed and checked."""

    ids: tuple[str, ...] | None  # None: every matching letter (--all)
    where: LetterFilter
    status: DeadLetterStatus  # with --all: PENDING or DEAD letters
    dry_run: bool
    rate_per_s: float | None


def replay_request(
    ids: Sequence[str] | None,
    *,
    replay_all: bool,
    filters: Sequence[str] = (),
    operation: str | None = None,
    status: str | None = "pending",
    dry_run: bool = False,
    rate: str | None = None,
) -> ReplayRequest:
    """The replay options as a request.

    Raises:
        OptionValueError: a bad ``--filter``, ``--rate`` or ``--status``.
        UsageError: neither ids nor ``--all``, or both.
    """
    if not ids and not replay_all:
        raise UsageError("replay: give letter ids or --all")
    if ids and replay_all:
        raise UsageError("replay: give letter ids or --all, not both")
    chosen = _parse_status(status)
    if chosen not in (DeadLetterStatus.PENDING, DeadLetterStatus.DEAD):
        raise OptionValueError("--status", str(status), "pending or dead (what replay can run)")
    return ReplayRequest(
        ids=tuple(ids) if ids else None,
        where=parse_filters(filters, operation=operation),
        status=chosen,
        dry_run=dry_run,
        rate_per_s=parse_rate(rate) if rate is not None else None,
    )


def run_replay(dlq: DeadLetterQueue, request: ReplayRequest) -> ReplayReport:
    """Replay what ``request`` selects through ``dlq`` (its handlers registered)."""
    return dlq.replay(
        request.ids,
        operation=request.where.operation,
        component=request.where.component,
        error_class=request.where.error_class,
        status=request.status,
        dry_run=request.dry_run,
        rate_per_s=request.rate_per_s,
    )


@dlq_app.command("list")
@guarded
def list_letters(
    status: Annotated[str | None, typer.Option(help=f"One of {_STATUSES}.")] = None,
    operation: Annotated[str | None, typer.Option(help="Only this operation.")] = None,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", metavar="KEY=VALUE", help=_FILTER_HELP)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """List dead letters, with counts by status."""
    chosen = _checked(lambda: _parse_status(status))
    where = _checked(lambda: parse_filters(filters or (), operation=operation))
    settings = bootstrap()
    with opened(settings) as application:
        letters = application.dlq.list(
            chosen,
            where.operation,
            limit,
            component=where.component,
            error_class=where.error_class,
        )
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
    filters: Annotated[
        list[str] | None, typer.Option("--filter", metavar="KEY=VALUE", help=_FILTER_HELP)
    ] = None,
    operation: Annotated[
        str | None, typer.Option(help="Only this operation (as --filter operation=...).")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="With --all: pending (default) or dead.")
    ] = "pending",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would run.")] = False,
    rate: Annotated[
        str | None, typer.Option(metavar="N/s", help=f"At most this fast: {RATE_ACCEPTS}.")
    ] = None,
) -> None:
    """Replay dead letters now: their real operations run again."""
    request = _checked(
        lambda: replay_request(
            ids,
            replay_all=replay_all,
            filters=filters or (),
            operation=operation,
            status=status,
            dry_run=dry_run,
            rate=rate,
        )
    )
    settings = bootstrap()
    with opened(settings) as application:
        # The orchestrator registers the replayable operations.
        Orchestrator(application)
        report = run_replay(application.dlq, request)
    typer.echo(
        f"{'would replay' if dry_run else 'replayed'} {len(report.selected)}: "
        f"recovered {len(report.recovered)}, failed {len(report.failed)}, "
        f"dead {len(report.dead)}, skipped {len(report.skipped)}"
    )
    if dry_run:
        for letter_id in report.selected:
            typer.echo(f"  {letter_id}")
    if report.failed or report.dead:
        raise typer.Exit(EXIT_FAILED)


@dlq_app.command("purge")
@guarded
def purge_letters(
    status: Annotated[str, typer.Option(help="dead (default) or recovered.")] = "dead",
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="AGE", help=f"Only letters last changed before: {AGE_ACCEPTS}."
        ),
    ] = None,
) -> None:
    """Delete dead (or recovered) letters, optionally only old ones."""
    chosen = _checked(lambda: _parse_status(status))
    if chosen not in (DeadLetterStatus.DEAD, DeadLetterStatus.RECOVERED):
        raise fail(
            f"--status {status!r}: purge accepts dead or recovered (pending work is never purged)",
            EXIT_CONFIG,
        )
    age = _checked(lambda: parse_age(older_than)) if older_than is not None else None
    settings = bootstrap()
    with opened(settings) as application:
        removed = application.dlq.purge(chosen, age)
    typer.echo(f"purged {removed} {chosen.value} letters")
