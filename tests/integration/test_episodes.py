"""Episode regrouping on a real DuckDB file: only changed rows are written, the result is whole."""

from __future__ import annotations

import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomem.config import Settings, load_settings
from biomem.ingest.records import validate_record
from biomem.ingest.writer import write_batch
from biomem.pipeline.base import StageContext
from biomem.pipeline.runner import STAGES, run_stage
from biomem.pipeline.short_term import ShortTermStage
from biomem.store import DuckDBStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)

# (source_id, created_at, topics, version, person): a later version of a source_id is an
# edit; the person, named mid-sentence, is an entity of the fallback enrichment.
Memory = tuple[str, datetime, list[str], int, str | None]

EPISODE_TABLES = {
    "episodes": "SELECT * FROM episodes ORDER BY episode_id",
    "episode_members": "SELECT * FROM episode_members ORDER BY uid",
}


def snapshot(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    return {name: store.execute(sql) for name, sql in EPISODE_TABLES.items()}


def ingest(store: DuckDBStore, memories: list[Memory]) -> None:
    records = [
        validate_record(
            source="jsonl",
            source_id=ident,
            content=f"Note {version} on {' and '.join(topics) or 'nothing'}"
            + (f" with {person}." if person else "."),
            created_at=at,
            # An edit is newer than what is stored, so it replaces it (a new revision).
            updated_at=AS_OF - timedelta(days=30) + timedelta(seconds=version),
            metadata={"topics": topics, "importance": 0.5},
            max_content_bytes=65536,
        )
        for ident, at, topics, version, person in memories
    ]
    with store.transaction() as con:
        write_batch(con, records, [], now=AS_OF)


def short_term(store: DuckDBStore, cfg: Settings) -> dict[str, Any]:
    outcome = run_stage(
        store, cfg, STAGES["short_term"], as_of=AS_OF, ollama=None, stop=threading.Event()
    )
    return outcome.result.detail


def from_scratch(store: DuckDBStore, cfg: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """The episodes computed into empty tables: what the stage wrote before it wrote diffs."""
    with store.transaction() as con:
        con.execute("DELETE FROM episode_members")
        con.execute("DELETE FROM episodes")
    ShortTermStage()._episodes(StageContext(store=store, settings=cfg, as_of=AS_OF, run_id=0))
    return snapshot(store)


def grouped_by_the_rule(store: DuckDBStore, cfg: Settings) -> list[tuple[Any, ...]]:
    """(uid, episode_id, position) by the documented rule, in Python, sorted by uid.

    In time order, a memory starts an episode when it is the first, comes more than
    the gap after the one before, or more than a sixth of the gap after it sharing no
    topic and no entity with it; a run is cut every ``max_episode_size`` memories.
    """
    gap = cfg.pipeline.short_term.episode_gap_seconds
    size = cfg.pipeline.short_term.max_episode_size
    rows = store.execute(
        "SELECT m.uid, m.created_at, e.topics, e.entities FROM memories m"
        " JOIN enrichments e USING (uid) ORDER BY m.created_at, m.uid"
    )
    out: list[tuple[Any, ...]] = []
    start = 0
    for i, (uid, at, topics, entities) in enumerate(rows):
        if i > 0:
            _, before, prev_topics, prev_entities = rows[i - 1]
            apart = (at - before).total_seconds()
            unrelated = not set(topics) & set(prev_topics) and not (
                set(entities) & set(prev_entities)
            )
            if apart > gap or (apart > gap / 6 and unrelated):
                start = i
        position = (i - start) % size
        out.append((uid, "ep:" + rows[i - position][0], position))
    return sorted(out)


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:1")
    return load_settings()


def session(prefix: str, start: datetime, count: int, topics: list[str]) -> list[Memory]:
    """``count`` memories two minutes apart sharing ``topics``."""
    return [
        (f"{prefix}{i}", start + timedelta(minutes=2 * i), topics, 0, None) for i in range(count)
    ]


def test_regrouping_an_unchanged_store_writes_nothing(store: DuckDBStore, cfg: Settings) -> None:
    """A second regrouping with no new or changed memory writes no row and keeps the episodes."""
    ingest(
        store,
        session("a", T0, 5, ["atlas"]) + session("b", T0 + timedelta(hours=3), 4, ["garden"]),
    )
    first = short_term(store, cfg)
    before = snapshot(store)

    again = short_term(store, cfg)

    assert (first["episodes"], first["episode_members_written"]) == (2, 9)
    assert (again["episodes"], again["episode_members_written"], again["episodes_written"]) == (
        2,
        0,
        0,
    )
    assert snapshot(store) == before


def test_memories_after_the_last_episode_write_only_their_rows(
    store: DuckDBStore, cfg: Settings
) -> None:
    """New memories join the last episode or start one; earlier memberships are not rewritten."""
    ingest(
        store,
        session("a", T0, 5, ["atlas"]) + session("b", T0 + timedelta(hours=3), 4, ["garden"]),
    )
    short_term(store, cfg)
    earlier = store.execute("SELECT * FROM episode_members ORDER BY uid")
    last = T0 + timedelta(hours=3, minutes=6)
    ingest(
        store,
        [
            ("b4", last + timedelta(minutes=2), ["garden"], 0, None),
            *session("c", last + timedelta(hours=2), 3, ["music"]),
        ],
    )

    detail = short_term(store, cfg)

    # Four new memberships; the garden episode grew and the music one is new.
    assert (detail["episodes"], detail["episode_members_written"]) == (3, 4)
    assert detail["episodes_written"] == 2
    members = store.execute("SELECT * FROM episode_members ORDER BY uid")
    assert [m for m in members if m[0] in {r[0] for r in earlier}] == earlier
    assert ("jsonl:b4", "ep:jsonl:b0", 4) in members
    incremental = snapshot(store)
    assert incremental == from_scratch(store, cfg)


def test_an_edit_before_the_last_episode_regroups_like_a_full_run(
    store: DuckDBStore, cfg: Settings
) -> None:
    """A memory moved into the gap merges two episodes; the merged-away episode is removed."""
    ingest(
        store,
        session("a", T0, 3, ["atlas"]) + session("b", T0 + timedelta(minutes=40), 3, ["atlas"]),
    )
    assert short_term(store, cfg)["episodes"] == 2  # a2 → b0: 36 minutes
    ingest(store, [("a2", T0 + timedelta(minutes=20), ["atlas"], 1, None)])

    detail = short_term(store, cfg)

    assert store.execute("SELECT episode_id, size FROM episodes") == [("ep:jsonl:a0", 6)]
    # b0..b2 moved to a0's episode and the b0 episode went: three memberships, two episodes.
    assert (detail["episode_members_written"], detail["episodes_written"]) == (3, 2)
    assert snapshot(store) == from_scratch(store, cfg)


_TOPICS = st.lists(st.sampled_from(["atlas", "garden", "music"]), max_size=2, unique=True)
_PEOPLE = st.sampled_from([None, "Ana", "Ben"])
# Minutes after the previous memory: within a sixth of the gap, within the gap, beyond it.
_STEP = st.sampled_from([1, 4, 12, 29, 31, 240])


@st.composite
def _histories(draw: st.DrawFn) -> tuple[list[list[Memory]], int]:
    """Batches of memories, later batches adding new ones and editing earlier ones."""
    batches: list[list[Memory]] = []
    at = T0
    known: list[Memory] = []
    for b in range(draw(st.integers(1, 4))):
        batch: list[Memory] = []
        for i in range(draw(st.integers(0, 8))):
            at += timedelta(minutes=draw(_STEP))
            batch.append((f"m{b}-{i}", at, draw(_TOPICS), 0, draw(_PEOPLE)))
        if known:
            for ident, when, _topics, version, _person in draw(
                st.lists(st.sampled_from(known), max_size=3, unique_by=lambda m: m[0])
            ):
                shift = timedelta(minutes=draw(st.integers(-60, 60)))
                batch.append((ident, when + shift, draw(_TOPICS), version + 1, draw(_PEOPLE)))
        known = list({m[0]: m for m in known + batch}.values())
        batches.append(batch)
    return batches, draw(st.integers(2, 5))


@settings(
    max_examples=30,
    deadline=None,
    # cfg is read-only here: one for all examples is what is meant.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(history=_histories())
def test_incremental_regrouping_equals_a_full_one(
    cfg: Settings, history: tuple[list[list[Memory]], int]
) -> None:
    """After any history of additions and edits the episodes equal those computed from scratch."""
    batches, max_size = history
    pipeline = cfg.pipeline
    short = pipeline.short_term.model_copy(update={"max_episode_size": max_size})
    cfg = cfg.model_copy(update={"pipeline": pipeline.model_copy(update={"short_term": short})})
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore.open(Path(tmp) / "store.duckdb")
        try:
            for batch in batches:
                ingest(store, batch)
                short_term(store, cfg)
            incremental = snapshot(store)
            assert incremental["episode_members"] == grouped_by_the_rule(store, cfg)
            assert incremental == from_scratch(store, cfg)
        finally:
            store.close()
