"""After the daemon stopped: what the store (and PostgreSQL's copy) holds, against the source.

The source is the truth: the memories a scenario offered (a JSONL file, or
whatever the PostgreSQL table holds at the end). Every one must be in the
store exactly once, with a current enrichment, embedding and episode
membership, none of them by the fallback once the LLM is back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg

__all__ = [
    "Expected",
    "KnownProductBug",
    "StoreAudit",
    "WritebackAudit",
    "assert_complete",
    "audit_store",
    "audit_writeback",
    "known_bug",
    "recovery_story",
]


class KnownProductBug(AssertionError):
    """A check that fails because of a product bug reported and not fixed yet.

    Scenarios mark themselves ``xfail(raises=KnownProductBug, strict=True)``:
    only this check may fail, any other failure still fails the test, and the
    test fails as soon as the bug is fixed (then remove the mark).
    """


def known_bug(holds: bool, message: str) -> None:
    """Raise :class:`KnownProductBug` with ``message`` unless ``holds``."""
    if not holds:
        raise KnownProductBug(message)


# Per memory: whether its derived rows are there and current, and by whom.
_PER_MEMORY = """
SELECT m.uid,
       e.revision = m.revision AS enriched, e.source AS enrichment_source,
       b.revision = m.revision AS embedded, b.source AS embedding_source,
       em.episode_id IS NOT NULL AS in_episode
FROM memories m
LEFT JOIN enrichments e USING (uid)
LEFT JOIN embeddings b USING (uid)
LEFT JOIN episode_members em USING (uid)
"""


@dataclass(slots=True)
class StoreAudit:
    """The store measured against the source's uids."""

    expected: int
    present: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: int = 0  # memories rows beyond the first per source id
    phantoms: list[str] = field(default_factory=list)  # in the store, not in the source
    not_enriched: list[str] = field(default_factory=list)
    not_embedded: list[str] = field(default_factory=list)
    not_in_episode: list[str] = field(default_factory=list)
    fallback_enrichments: int = 0
    fallback_embeddings: int = 0
    runs_by_status: dict[str, int] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    outbox: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    # Automated recovery's decisions (recovery_audit), oldest first.
    recovery: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "present": self.present,
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            "phantoms": len(self.phantoms),
            "not_enriched": len(self.not_enriched),
            "not_embedded": len(self.not_embedded),
            "not_in_episode": len(self.not_in_episode),
            "fallback_enrichments": self.fallback_enrichments,
            "fallback_embeddings": self.fallback_embeddings,
            "runs_by_status": self.runs_by_status,
            "dead_letters": len(self.dead_letters),
            "outbox": self.outbox,
            "quarantined": self.quarantined,
        }


def audit_store(
    path: Path, expected_uids: Iterable[str], *, postgres_url: str | None = None
) -> StoreAudit:
    """Read the store (read-only: the daemon must have stopped) against the source.

    With ``postgres_url`` (the daemon ran with POSTGRES_DB_URL), dead letters live in
    PostgreSQL's ``biomem.dead_letters`` and only spill to the store while PostgreSQL is
    out of reach: both tables are read, so a letter moved over is still seen.
    """
    expected = set(expected_uids)
    audit = StoreAudit(expected=len(expected))
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(_PER_MEMORY).fetchall()
        seen: set[str] = set()
        for uid, enriched, e_source, embedded, b_source, in_episode in rows:
            seen.add(uid)
            if uid not in expected:
                audit.phantoms.append(uid)
            if not enriched:
                audit.not_enriched.append(uid)
            if not embedded:
                audit.not_embedded.append(uid)
            if not in_episode:
                audit.not_in_episode.append(uid)
            audit.fallback_enrichments += e_source == "fallback"
            audit.fallback_embeddings += b_source == "fallback"
        audit.present = len(seen & expected)
        # The primary key says one row per uid; count per source id regardless.
        row = con.execute(
            "SELECT count(*) - count(DISTINCT (source, source_id)) FROM memories"
        ).fetchone()
        audit.duplicated = int(row[0]) if row else 0
        audit.lost = sorted(expected - seen)
        audit.runs_by_status = dict(
            con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        )
        columns = ("operation", "component", "status", "attempts", "first_failed_at", "message")
        audit.dead_letters = [
            dict(zip(columns, row, strict=True))
            for row in con.execute(
                f"SELECT {', '.join(columns)} FROM dead_letters ORDER BY first_failed_at"
            ).fetchall()
        ]
        audit.outbox = dict(
            con.execute("SELECT status, count(*) FROM alert_outbox GROUP BY status").fetchall()
        )
        row = con.execute("SELECT count(*) FROM quarantine").fetchone()
        audit.quarantined = int(row[0]) if row else 0
        keys = ("decided_at", "rule", "component", "action", "outcome", "reason", "phase")
        audit.recovery = [
            dict(zip((*keys, "occurrences", "summary"), row, strict=True))
            for row in con.execute(
                f"SELECT {', '.join(keys)}, occurrences, summary FROM recovery_audit ORDER BY id"
            ).fetchall()
        ]
    if postgres_url is not None:
        audit.dead_letters += _shared_dead_letters(postgres_url, columns)
        audit.dead_letters.sort(key=lambda letter: letter["first_failed_at"])
    return audit


def _shared_dead_letters(url: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The dead letters in PostgreSQL's shared table (none when it was never created)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('biomem.dead_letters')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute(
            f"SELECT {', '.join(columns)} FROM biomem.dead_letters ORDER BY first_failed_at"
        ).fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def assert_complete(audit: StoreAudit, *, llm: bool = True) -> None:
    """Every source memory exactly once with its derived rows; no fallback left (``llm``)."""
    assert not audit.lost, f"{len(audit.lost)} memories lost, e.g. {audit.lost[:5]}"
    assert audit.duplicated == 0, f"{audit.duplicated} duplicated memories"
    assert not audit.phantoms, f"memories not in the source: {audit.phantoms[:5]}"
    assert not audit.not_enriched, f"{len(audit.not_enriched)} without a current enrichment"
    assert not audit.not_embedded, f"{len(audit.not_embedded)} without a current embedding"
    assert not audit.not_in_episode, f"{len(audit.not_in_episode)} in no episode"
    if llm:
        assert audit.fallback_enrichments == 0, (
            f"{audit.fallback_enrichments} fallback enrichments left with the LLM back"
        )
        assert audit.fallback_embeddings == 0, (
            f"{audit.fallback_embeddings} fallback embeddings left with the LLM back"
        )
    open_letters = [d for d in audit.dead_letters if d["status"] in ("pending", "replaying")]
    assert not open_letters, f"dead letters still open at the end: {open_letters}"
    dead = [d for d in audit.dead_letters if d["status"] == "dead"]
    assert not dead, f"dead letters given up on: {dead}"


@dataclass(slots=True)
class WritebackAudit:
    """PostgreSQL's copy (schema dreams) against the store."""

    rows: int
    distinct: int
    missing: list[str]
    extra: list[str]
    fallback: int


def audit_writeback(url: str, expected_uids: Iterable[str]) -> WritebackAudit:
    expected = set(expected_uids)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT memory_uid, enrichment_source FROM dreams.memories").fetchall()
    uids = [str(uid) for uid, _ in rows]
    return WritebackAudit(
        rows=len(uids),
        distinct=len(set(uids)),
        missing=sorted(expected - set(uids)),
        extra=sorted(set(uids) - expected),
        fallback=sum(1 for _, source in rows if source == "fallback"),
    )


@dataclass(frozen=True, slots=True)
class Expected:
    """A recovery decision a scenario requires: ``rule`` decided ``action`` with ``outcome``
    (and ``reason`` for a skip), while the fault lasted or in the ``settle_s`` after it."""

    rule: str
    action: str
    outcome: str = "done"
    reason: str | None = None


# Actions that cannot run in the scenarios, and the skip (outcome, reason) they must record.
_ACTIONS_NEVER_DONE = {
    # No restart command is configured in the scenarios: the action must say so, never
    # pretend (issue 7: "the action is unavailable when none is configured").
    "restart_ollama": ("skipped", "unavailable"),
}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def recovery_story(
    figures: Any,
    audit: StoreAudit,
    *,
    components: Iterable[str] = (),
    required: Iterable[Expected] = (),
    fault: tuple[datetime, datetime] | None = None,
    settle_s: float = 30.0,
    quiet_reason: str = "",
) -> list[dict[str, Any]]:
    """Assert what automated recovery decided during the scenario, and tell it.

    * every decision is about one of ``components`` (the ones the fault touched):
      nothing remediated a component that was fine;
    * every ``required`` decision is in the audit, decided between the fault's start
      and ``settle_s`` after its end (``fault``: the scenario's wall-clock times);
    * no action in ``_ACTIONS_NEVER_DONE`` claims to have run.

    Returns the decisions; the figures get them as ``recovery_audit`` and a sentence.
    """
    allowed = set(components)
    rows = audit.recovery
    figures.facts["recovery_audit"] = [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        for row in rows
    ]
    strays = [r for r in rows if r["component"] not in allowed]
    assert not strays, f"recovery acted on components the fault did not touch: {strays}"
    for row in rows:
        for name, (outcome, reason) in _ACTIONS_NEVER_DONE.items():
            if name in row["action"].split("+") and row["outcome"] != "skipped":
                raise AssertionError(f"{name} reported {row['outcome']}: {row}")
            if row["action"] == name:
                assert (row["outcome"], row["reason"]) == (outcome, reason), row
    for want in required:
        matches = [
            r
            for r in rows
            if (r["rule"], r["action"], r["outcome"], r["reason"])
            == (want.rule, want.action, want.outcome, want.reason)
        ]
        assert matches, f"no recovery decision {want}; the audit holds: " + "; ".join(
            f"{r['rule']} {r['action']} {r['outcome']}" for r in rows
        )
        if fault is not None:
            begin, end = fault
            at = _aware(matches[0]["decided_at"])
            assert begin <= at <= end + timedelta(seconds=settle_s), (
                f"{want.rule} {want.action} decided at {at}, outside the fault "
                f"({begin} to {end}, +{settle_s:g} s)"
            )
    acted = [r for r in rows if r["outcome"] in ("done", "failed", "started")]
    if not rows:
        figures.say(
            f"Automated recovery decided nothing{': ' + quiet_reason if quiet_reason else ''}."
        )
    else:
        parts = []
        for r in rows:
            when = ""
            if fault is not None:
                when = (
                    f" {(_aware(r['decided_at']) - fault[0]).total_seconds():.1f} s after the fault"
                )
            what = r["outcome"] + (f" ({r['reason']})" if r["reason"] else "")
            times = f" ×{r['occurrences']}" if r["occurrences"] > 1 else ""
            parts.append(f"{r['rule']} → {r['action']}: {what}{times}{when}")
        figures.say(
            f"Automated recovery ({len(acted)} action(s) run, {len(rows) - len(acted)} "
            f"decision(s) skipped): " + "; ".join(parts) + "."
        )
    return rows
