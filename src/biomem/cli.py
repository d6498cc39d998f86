"""The ``biomem`` command line.

Every command loads and validates the whole configuration first: a bad
setting stops the program with one line and exit code 2 before anything
else happens. Errors biomem raises on purpose end the command with one line
and exit code 1; results go to standard output, logs to standard error.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from biomem import __version__
from biomem.cli_alerts import alerts_app
from biomem.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    bootstrap,
    fail,
    guarded,
    opened,
)
from biomem.cli_dlq import dlq_app
from biomem.cli_health import health
from biomem.cli_recovery import recovery_app
from biomem.config import Settings, effective_config
from biomem.daemon import run_daemon, store_summary
from biomem.health.server import check_token_policy
from biomem.ingest import IngestCounts, PostgresSource, ingest_jsonl
from biomem.logging import get_logger
from biomem.orchestrator import Orchestrator, run_postgres_ingest
from biomem.pipeline.recall import recall as recall_memories
from biomem.pipeline.runner import StageOutcome, resolve_stages
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus, record_run

__all__ = ["app", "main"]

app = typer.Typer(
    name="biomem",
    help="A biological memory pipeline with a production reliability layer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app)
app.add_typer(alerts_app)
app.add_typer(recovery_app)
app.command("health")(health)
log = get_logger("biomem.cli")


def _print_counts(counts: IngestCounts, *, store: DuckDBStore, as_json: bool) -> None:
    summary = {**counts.as_dict(), **store_summary(store)}
    if as_json:
        typer.echo(json.dumps({**summary, "quarantine_reasons": counts.reasons}))
        return
    line = (
        f"ingested {counts.ingested}, updated {counts.updated}, unchanged {counts.unchanged}, "
        f"quarantined {counts.quarantined}"
    )
    if counts.stale:
        line += f", stale {counts.stale} (older than the stored version, not applied)"
    typer.echo(line)
    for reason, number in sorted(counts.reasons.items(), key=lambda item: -item[1]):
        typer.echo(f"  quarantined: {number} × {reason}")
    typer.echo(
        f"store {summary['store']}: {summary['memories']} memories, "
        f"{summary['quarantined']} quarantined records"
    )


@app.command()
@guarded
def ingest(
    source: Annotated[
        str | None,
        typer.Argument(help="A JSON Lines file, or - for standard input."),
    ] = None,
    postgres: Annotated[
        bool, typer.Option("--postgres", help="Ingest from POSTGRES_DB_URL up to now.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Ingest memories from a JSONL file, standard input, or PostgreSQL.

    Exits 0 when any record was valid, 1 when the input held only bad records.
    """
    settings = bootstrap()
    if (source is None) == (not postgres):
        raise fail("give either a FILE (or -) or --postgres", EXIT_CONFIG)
    if postgres and settings.postgres.url is None:
        raise fail("--postgres needs POSTGRES_DB_URL to be set", EXIT_CONFIG)
    with opened(settings) as application:
        store = application.store
        if postgres:
            assert application.postgres is not None
            counts = run_postgres_ingest(
                store, PostgresSource(application.postgres, settings.ingest.postgres), settings
            )
        else:
            assert source is not None
            counts = _ingest_file(store, source, settings)
        _print_counts(counts, store=store, as_json=as_json)
    if counts.quarantined and not counts.good:
        raise typer.Exit(EXIT_FAILED)


def _ingest_file(store: DuckDBStore, source: str, settings: Settings) -> IngestCounts:
    # Open before recording a run: a missing file is a usage error, not a failed run.
    if source == "-":
        stream, location = sys.stdin.buffer, "stdin"
    else:
        try:
            # Closed by the with-block below, which also covers standard input.
            stream, location = Path(source).open("rb"), source  # noqa: SIM115
        except OSError as exc:
            raise fail(f"cannot read {source}: {exc.strerror}", EXIT_FAILED) from None
    with stream, record_run(store, "ingest") as run:
        counts = ingest_jsonl(store, stream, location=location, settings=settings.ingest)
        run.counts = {"source": location, **counts.as_dict()}
    log.info("ingest_done", source=location, **counts.as_dict())
    return counts


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--as-of {value!r} is not an ISO 8601 time", EXIT_CONFIG) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _share(count: int, handled: int) -> str:
    return f"{count} ({100 * count / handled:.0f}%)" if handled else str(count)


def _print_summary(outcomes: list[StageOutcome], console: Console) -> None:
    table = Table(title="biomem pipeline run")
    for column in ("stage", "status", "items", "LLM", "fallback", "deferred", "seconds", "note"):
        table.add_column(column, justify="right" if column in ("items", "seconds") else "left")
    for o in outcomes:
        r = o.result
        handled = r.llm + r.fallback
        note = o.error or ""
        if not note and r.detail.get("llm_unavailable"):
            note = "LLM unavailable"
        elif not note and r.detail.get("skipped"):
            note = "no PostgreSQL configured"
        table.add_row(
            o.stage,
            str(o.status),
            str(r.items),
            _share(r.llm, handled),
            _share(r.fallback, handled),
            str(r.deferred),
            f"{o.seconds:.2f}",
            note[:80],
        )
    console.print(table)
    for o in outcomes:
        reason = o.result.detail.get("llm_unavailable")
        if reason:
            console.print(f"{o.stage}: LLM unavailable ({reason}); fallback rows are redone later")
            break


@app.command()
@guarded
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run the stages once in dependency order and exit.")
    ] = False,
    stage: Annotated[
        list[str] | None,
        typer.Option("--stage", help="With --once: only this stage (repeatable)."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="With --once: the run's clock, ISO 8601 (replay history)."),
    ] = None,
) -> None:
    """Run the pipeline: the daemon until Ctrl-C / SIGTERM, or --once and exit.

    With --once, exits 0 when every stage succeeded (with or without fallback), 1 when one failed.
    """
    settings = bootstrap()
    names = list(stage or [])
    moment = _parse_as_of(as_of)
    if (names or moment) and not once:
        raise fail("--stage and --as-of need --once", EXIT_CONFIG)
    try:
        resolve_stages(names)
    except ValueError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    if settings.health.http_endpoints and not once:
        # Before anything else: refuse to serve details beyond loopback without a token.
        check_token_policy(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a pipe or a log file: no need to wrap at 80
    with opened(settings) as application:
        orchestrator = Orchestrator(application, stop=stop)
        try:
            if once:
                outcomes = _run_once(orchestrator, names, moment, console)
            else:
                run_daemon(
                    orchestrator,
                    application,
                    stop,
                    on_pass=lambda outcomes: _print_summary(outcomes, console),
                )
                outcomes = []
        finally:
            orchestrator.stop()
    if once:
        _print_summary(outcomes, console)
        if any(o.status in (RunStatus.FAILED, "skipped") for o in outcomes):
            raise typer.Exit(EXIT_FAILED)
    else:
        typer.echo("stopped")


def _run_once(
    orchestrator: Orchestrator, names: list[str], moment: datetime | None, console: Console
) -> list[StageOutcome]:
    if not console.is_terminal:
        return orchestrator.run_pass(names, as_of=moment)
    with Progress(console=console, transient=True) as bars:

        def progress_for(name: str) -> Callable[[int, int], None]:
            task = bars.add_task(name, total=None)

            def update(done: int, total: int) -> None:
                bars.update(task, completed=done, total=total or None)

            return update

        return orchestrator.run_pass(names, as_of=moment, progress_for=progress_for)


@app.command()
@guarded
def recall(
    query: Annotated[str, typer.Argument(help="What to remember.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many memories.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank memories by similarity × strength for QUERY and say why each ranked."""
    settings = bootstrap()
    if not query.strip():
        raise fail("the query is empty", EXIT_CONFIG)
    with opened(settings) as application:
        hits = recall_memories(
            application.store,
            query,
            k=k,
            dimensions=settings.pipeline.long_term.dimensions,
            now=datetime.now(UTC),
            ollama=application.ollama_factory(),
        )
    if as_json:
        typer.echo(json.dumps([hit.as_dict() for hit in hits], ensure_ascii=False))
        return
    if not hits:
        typer.echo("no memory matches (has the pipeline run? `biomem run --once`)")
        return
    for number, hit in enumerate(hits, 1):
        typer.echo(f"{number}. [{hit.created_at:%Y-%m-%d %H:%M}] {hit.content}")
        typer.echo(
            f"   goal: {hit.goal or '-'} | score {hit.score:.3f} = similarity {hit.similarity:.3f}"
            f" × strength {hit.strength:.3f} (recency {hit.recency:.2f}, access {hit.access:.2f},"
            f" {hit.embedding} embedding)"
        )


@app.command("config")
@guarded
def show_config() -> None:
    """Print the effective configuration as JSON, every secret masked."""
    settings = bootstrap()
    typer.echo(json.dumps(effective_config(settings), indent=2))


@app.command()
@guarded
def quarantine(
    limit: Annotated[int, typer.Option(min=1, help="How many records to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List quarantined records, newest first, with their reasons."""
    settings = bootstrap()
    with opened(settings) as application:
        rows = application.store.execute(
            "SELECT id, source, location, record_id, reason, times_seen, last_seen_at"
            " FROM quarantine ORDER BY last_seen_at DESC, id DESC LIMIT ?",
            [limit],
        )
    keys = ("id", "source", "location", "record_id", "reason", "times_seen", "last_seen_at")
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        if as_json:
            typer.echo(json.dumps(item, default=str))
        else:
            typer.echo(f"{item['location']}: {item['reason']} (seen {item['times_seen']}×)")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)


def main() -> None:
    """Console-script entry point."""
    app()
