"""What each chaos scenario measured, written as one JSON file per scenario.

The catalogue lists the issue's twelve scenarios in its order; the report
(scripts/chaos_report.py) renders docs/RELIABILITY.md from the JSON files and
names every catalogued scenario that has none, so a scenario that did not run
cannot pass for one that did.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

__all__ = ["CATALOGUE", "Figures", "results_dir"]

REPO: Final = Path(__file__).resolve().parents[2]

# id -> (title, the fault as the issue states it)
CATALOGUE: Final[dict[str, tuple[str, str]]] = {
    "pg_killed_mid_ingest": (
        "PostgreSQL killed mid-ingest",
        "kill -9 of the postmaster while biomem reads the source table; restarted after 20 s",
    ),
    "pg_terminate_backend": (
        "PostgreSQL connections terminated during writeback",
        "pg_terminate_backend on every biomem connection while writeback runs, three times",
    ),
    "pg_partition": (
        "Network partition to PostgreSQL",
        "the proxy between biomem and PostgreSQL blackholes all traffic for 30 s",
    ),
    "ollama_refused": (
        "Ollama refusing connections for a whole run",
        "the proxy in front of Ollama refuses connections for a whole pipeline pass, then heals",
    ),
    "ollama_hang": (
        "Ollama hanging",
        "the proxy in front of Ollama accepts and never answers, mid-enrichment",
    ),
    "ollama_overloaded": (
        "Ollama returning 503 and 429 with Retry-After under load",
        "every request answered 503 (Retry-After 1), then 429 (Retry-After 2), under load",
    ),
    "ollama_malformed": (
        "Ollama returning malformed JSON for a share of requests",
        "one in three chat answers unusable: prose instead of JSON, or a truncated body",
    ),
    "duckdb_held": (
        "DuckDB file held by another process",
        "another process holds the store's write lock while biomem starts and ingests",
    ),
    "disk_full": (
        "Disk full on the data directory",
        "the data directory is a 64 MiB tmpfs, filled to the last byte mid-run",
    ),
    "sigkill_mid_stage": (
        "biomem SIGKILLed mid-stage and restarted",
        "SIGKILL inside short-term enrichment, then inside long-term embedding; restarted",
    ),
    "webhook_down": (
        "Alert webhook receiver down for the whole incident",
        "nothing listens at the webhook URL during an Ollama outage; the receiver starts later",
    ),
    "bad_records": (
        "10,000 bad records in an ingest batch",
        "one ingest batch of 10,000 bad rows of five kinds among 400 good ones",
    ),
}


def results_dir() -> Path:
    """CHAOS_RESULTS_DIR, default build/chaos in the repository."""
    configured = os.environ.get("CHAOS_RESULTS_DIR", "").strip()
    return Path(configured) if configured else REPO / "build" / "chaos"


@dataclass(slots=True)
class Figures:
    """One scenario's measurements and the facts its paragraph is written from."""

    scenario: str
    title: str = ""
    fault: str = ""
    status: str = "not run"  # passed, failed, skipped, xfailed, xpassed
    reason: str | None = None  # why skipped / xfailed / failed
    time_to_detect_s: float | None = None
    detected_by: str | None = None
    time_to_recover_s: float | None = None
    recovered_by: str | None = None
    source_items: int | None = None
    items_lost: int | None = None
    items_duplicated: int | None = None
    notifications_sent: int | None = None
    story: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""

    def __post_init__(self) -> None:
        if self.scenario in CATALOGUE:
            self.title, self.fault = CATALOGUE[self.scenario]

    def say(self, sentence: str) -> None:
        """Add one sentence to what happened, in order."""
        self.story.append(sentence)

    def write(self) -> Path:
        self.recorded_at = datetime.now(UTC).isoformat(timespec="seconds")
        directory = results_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n", encoding="utf-8")
        return path


def round_s(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
