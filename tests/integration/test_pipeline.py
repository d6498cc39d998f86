"""The pipeline stages on a real DuckDB file: formulas, idempotency, increments, fallback."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from biomem.config import Settings, load_settings
from biomem.guards import build_guards
from biomem.ingest.records import validate_record
from biomem.ingest.writer import write_batch
from biomem.pipeline.base import OllamaFactory
from biomem.pipeline.runner import STAGES, ollama_factory, run_stage, run_stages
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore
from biomem.store.runs import RunStatus
from tests.conftest import SAMPLES
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
AS_OF = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)

# Tables that hold the pipeline's results (working_memory and runs are per run).
RESULT_TABLES = {
    "enrichments": "SELECT * FROM enrichments ORDER BY uid",
    "episodes": "SELECT * FROM episodes ORDER BY episode_id",
    "episode_members": "SELECT * FROM episode_members ORDER BY uid",
    "associations": "SELECT * FROM associations ORDER BY a, b",
    "memory_state": "SELECT * EXCLUDE (updated_at) FROM memory_state ORDER BY uid",
    "embeddings": "SELECT * FROM embeddings ORDER BY uid",
    "semantic_edges": "SELECT * FROM semantic_edges ORDER BY a, b",
    "dreams": "SELECT * FROM dreams ORDER BY dream_id",
    "pipeline_state": "SELECT key, value FROM pipeline_state ORDER BY key",
}


def snapshot(store: DuckDBStore) -> dict[str, list[tuple[Any, ...]]]:
    return {name: store.execute(sql) for name, sql in RESULT_TABLES.items()}


def add(store: DuckDBStore, *memories: tuple[str, str, datetime, dict[str, Any]]) -> None:
    records = [
        validate_record(
            source="jsonl",
            source_id=ident,
            content=content,
            created_at=at,
            updated_at=None,
            metadata=meta,
            max_content_bytes=65536,
        )
        for ident, content, at, meta in memories
    ]
    with store.transaction() as con:
        write_batch(con, records, [], now=AS_OF)


def guarded_ollama(settings: Settings) -> OllamaFactory:
    """The product's ollama policy, on a fake clock: retry waits and open periods take no time."""
    return ollama_factory(settings, build_guards(settings, clock=FakeClock()).ollama)


def settings_for(url: str | None, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OLLAMA_URL", url or "http://127.0.0.1:1")
    return load_settings()


def run_all(store: DuckDBStore, settings: Settings, *, as_of: datetime = AS_OF) -> dict[str, Any]:
    outcomes = run_stages(
        store, settings, [], as_of=as_of, ollama=guarded_ollama(settings), stop=threading.Event()
    )
    assert all(o.status != RunStatus.FAILED for o in outcomes), [
        (o.stage, o.error) for o in outcomes
    ]
    return {o.stage: o for o in outcomes}


@pytest.fixture
def samples_store(store: DuckDBStore) -> Iterator[DuckDBStore]:
    from biomem.config import IngestSettings
    from biomem.ingest import ingest_jsonl

    with SAMPLES.open("rb") as stream:
        ingest_jsonl(store, stream, location="samples", settings=IngestSettings())
    yield store


def test_working_memory_priority_matches_hand_computation(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """priority = 0.4·importance + 0.3·recency + 0.2·access + 0.1·|valence| within the window."""
    add(
        store,
        ("old", "outside the window", AS_OF - timedelta(seconds=301), {"importance": 1.0}),
        (
            "a",
            "recent and important",
            AS_OF - timedelta(seconds=60),
            {"importance": 0.9, "emotional_valence": -0.5},
        ),
        ("b", "just now", AS_OF, {"importance": 0.2, "emotional_valence": 0.1}),
    )
    settings = settings_for(None, monkeypatch)
    outcome = run_stage(
        store, settings, STAGES["working_memory"], as_of=AS_OF, ollama=None, stop=threading.Event()
    )
    rows = store.execute(
        "SELECT rank, uid, priority FROM working_memory WHERE run_id = (SELECT max(run_id)"
        " FROM working_memory) ORDER BY rank"
    )
    expected_a = 0.4 * 0.9 + 0.3 * (1 - 60 / 300) + 0 + 0.1 * 0.5
    expected_b = 0.4 * 0.2 + 0.3 * 1.0 + 0 + 0.1 * 0.1
    assert outcome.result.items == 2
    assert [(r[0], r[1]) for r in rows] == [(1, "jsonl:a"), (2, "jsonl:b")]
    assert rows[0][2] == pytest.approx(expected_a)
    assert rows[1][2] == pytest.approx(expected_b)


def test_working_memory_capacity_is_respected(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never more than the configured capacity of memories in one snapshot."""
    add(store, *[(f"m{i}", f"memory {i}", AS_OF - timedelta(seconds=i), {}) for i in range(12)])
    settings = settings_for(None, monkeypatch)
    run_stage(
        store, settings, STAGES["working_memory"], as_of=AS_OF, ollama=None, stop=threading.Event()
    )
    assert store.execute("SELECT count(*) FROM working_memory") == [(7,)]


def test_episodes_split_by_gap_and_hebbian_weights(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minutes apart: one episode; a 2-hour gap: another; weights follow the Hebbian rule."""
    meta = {"importance": 0.8, "topics": ["atlas"], "people": ["Ana"]}
    add(
        store,
        ("x1", "Met Ana about Atlas.", T0, meta),
        (
            "x2",
            "Ana and I fixed the Atlas bug.",
            T0 + timedelta(minutes=4),
            meta | {"importance": 0.5},
        ),
        ("y1", "Bought milk.", T0 + timedelta(hours=2), {"importance": 0.1, "topics": ["errands"]}),
    )
    settings = settings_for(None, monkeypatch)
    for name in ("short_term", "consolidation"):
        run_stage(store, settings, STAGES[name], as_of=AS_OF, ollama=None, stop=threading.Event())
    members = store.execute("SELECT uid, episode_id FROM episode_members ORDER BY uid")
    assert members == [
        ("jsonl:x1", "ep:jsonl:x1"),
        ("jsonl:x2", "ep:jsonl:x1"),
        ("jsonl:y1", "ep:jsonl:y1"),
    ]
    ((a, b, k, base, weight),) = store.execute(
        "SELECT a, b, coactivations, base_weight, weight FROM associations"
    )
    shared = store.execute(
        "SELECT len(list_distinct(list_intersect(x.topics, y.topics)))"
        " + len(list_distinct(list_intersect(x.entities, y.entities)))"
        " FROM enrichments x, enrichments y WHERE x.uid = 'jsonl:x1' AND y.uid = 'jsonl:x2'"
    )[0][0]
    assert shared >= 2  # both mention Ana and Atlas
    assert (a, b, k) == ("jsonl:x1", "jsonl:x2", 1 + shared)
    assert base == pytest.approx(0.8 * 0.5 * (1 - (1 - 0.1) ** k))
    hours = (AS_OF - (T0 + timedelta(minutes=4))).total_seconds() / 3600
    assert weight == pytest.approx(base * (1 - 0.001 * hours))


def test_fates_follow_replay_thresholds(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """replay = 0.5·importance + 0.5·tanh(4·Σw) and the fate is read off the thresholds."""
    add(
        store,
        (
            "hi",
            "Launched Beacon with the whole team!",
            T0,
            {"importance": 1.0, "topics": ["beacon"]},
        ),
        (
            "lo",
            "Bought stamps.",
            T0 + timedelta(hours=5),
            {"importance": 0.05, "topics": ["errands"]},
        ),
    )
    settings = settings_for(None, monkeypatch)
    for name in ("short_term", "consolidation"):
        run_stage(store, settings, STAGES[name], as_of=AS_OF, ollama=None, stop=threading.Event())
    rows = dict(store.execute("SELECT uid, fate FROM memory_state"))
    replay = dict(store.execute("SELECT uid, replay_strength FROM memory_state"))
    assert replay["jsonl:hi"] == pytest.approx(0.5)  # alone in its episode: Σw = 0
    assert rows["jsonl:hi"] == "hippocampal_retention"
    assert replay["jsonl:lo"] == pytest.approx(0.025)
    assert rows["jsonl:lo"] == "rapid_forgetting"


def test_homeostasis_brings_mean_into_band_once(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of band: one run brings the mean to the target; a second run does nothing."""
    settings = settings_for(None, monkeypatch)
    late = datetime(2027, 3, 1, tzinfo=UTC)  # months later: forgetting drags the mean down
    for name in ("short_term", "consolidation"):
        run_stage(
            samples_store, settings, STAGES[name], as_of=late, ollama=None, stop=threading.Event()
        )
    before = samples_store.fetchone("SELECT avg(strength) FROM memory_state")
    assert before is not None and before[0] < 0.25
    first = run_stage(
        samples_store,
        settings,
        STAGES["homeostasis"],
        as_of=late,
        ollama=None,
        stop=threading.Event(),
    )
    after = samples_store.fetchone(
        "SELECT avg(strength), min(strength), max(strength) FROM memory_state"
    )
    assert first.result.detail["rescaled"] is True
    assert after is not None and after[0] == pytest.approx(0.5, abs=1e-3)
    assert 0 <= after[1] <= after[2] <= 1
    second = run_stage(
        samples_store,
        settings,
        STAGES["homeostasis"],
        as_of=late,
        ollama=None,
        stop=threading.Event(),
    )
    assert second.result.detail["rescaled"] is False


def test_all_stages_are_idempotent(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running every stage twice at the same time changes nothing the second time."""
    settings = settings_for(None, monkeypatch)
    run_all(samples_store, settings)
    first = snapshot(samples_store)
    second_run = run_all(samples_store, settings)
    assert snapshot(samples_store) == first
    assert second_run["short_term"].result.items == 0
    assert second_run["long_term"].result.items == 0


def test_only_new_memories_are_processed(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a full run, adding two memories enriches and embeds exactly those two."""
    settings = settings_for(None, monkeypatch)
    run_all(samples_store, settings)
    add(
        samples_store,
        ("new-1", "A brand new memory about the Atlas retro.", AS_OF, {}),
        ("new-2", "Another new one: groceries.", AS_OF, {}),
    )
    again = run_all(samples_store, settings)
    assert again["short_term"].result.items == 2
    assert again["long_term"].result.items == 2


def test_fallback_rows_are_replaced_when_llm_returns(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama
) -> None:
    """With no LLM every row is fallback and dreams wait; with the LLM back, all are redone."""
    offline = settings_for(None, monkeypatch)
    first = run_all(samples_store, offline)
    assert first["short_term"].result.fallback == 600
    assert first["dreams"].status == RunStatus.DEFERRED
    assert samples_store.execute("SELECT DISTINCT source FROM enrichments") == [("fallback",)]
    assert samples_store.execute("SELECT count(*) FROM dreams") == [(0,)]
    online = settings_for(fake_ollama.url, monkeypatch)
    second = run_all(samples_store, online)
    assert second["short_term"].result.llm == 600
    assert second["long_term"].result.llm == 600
    assert samples_store.execute("SELECT DISTINCT source FROM enrichments") == [("llm",)]
    assert samples_store.execute("SELECT DISTINCT source FROM embeddings") == [("llm",)]
    requests = fake_ollama.request_log
    bodies = [r.json() for r in requests if r.path == "/api/chat"]
    assert bodies and all(b["stream"] is False and isinstance(b["format"], dict) for b in bodies)


def test_malformed_answers_are_repaired_or_fall_back(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama
) -> None:
    """A fenced answer is repaired; garbage twice goes to the fallback; the stage never fails."""
    add(store, ("m1", "Met Ana about Atlas.", T0, {}))
    settings = settings_for(fake_ollama.url, monkeypatch)
    fake_ollama.malformed_content("fenced", count=1, paths=["/api/chat"])
    outcome = run_stage(
        store,
        settings,
        STAGES["short_term"],
        as_of=AS_OF,
        ollama=guarded_ollama(settings),
        stop=threading.Event(),
    )
    assert (outcome.result.llm, outcome.result.fallback) == (1, 0)
    add(store, ("m2", "Bought milk.", T0 + timedelta(hours=1), {}))
    fake_ollama.malformed_content("garbage", count=2, paths=["/api/chat"])
    outcome = run_stage(
        store,
        settings,
        STAGES["short_term"],
        as_of=AS_OF,
        ollama=guarded_ollama(settings),
        stop=threading.Event(),
    )
    assert outcome.status == RunStatus.SUCCEEDED
    assert (outcome.result.llm, outcome.result.fallback) == (0, 1)
    # One call for the fenced answer; for the garbage one, the call and its one retry.
    assert fake_ollama.request_count("/api/chat") == 3


def test_llm_outage_mid_run_falls_back_quickly(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama
) -> None:
    """When Ollama starts failing mid-run, the run stops calling it and finishes on the fallback."""
    settings = settings_for(fake_ollama.url, monkeypatch)
    fake_ollama.fail_with(503, paths=["/api/chat"])
    outcome = run_stage(
        samples_store,
        settings,
        STAGES["short_term"],
        as_of=AS_OF,
        ollama=guarded_ollama(settings),
        stop=threading.Event(),
    )
    assert outcome.status == RunStatus.SUCCEEDED
    assert outcome.result.fallback == 600
    # The gate trips after a few failures: far fewer calls than memories.
    assert fake_ollama.request_count("/api/chat") < 20


def test_recall_ranks_relevant_memories(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall on the samples puts memories about the query's subject first and counts access."""
    from biomem.pipeline.recall import recall

    settings = settings_for(None, monkeypatch)
    run_all(samples_store, settings)
    hits = recall(samples_store, "Atlas cutover", k=5, dimensions=768, now=AS_OF, ollama=None)
    assert len(hits) == 5
    assert all("atlas" in h.content.lower() or "cutover" in h.content.lower() for h in hits[:3])
    assert hits == sorted(hits, key=lambda h: -h.score)
    for hit in hits:
        assert hit.score == pytest.approx(
            hit.similarity * hit.strength * (0.8 + 0.1 * hit.recency + 0.1 * hit.access)
        )
    counted = samples_store.execute("SELECT sum(access_count) FROM memory_state")
    assert counted == [(5,)]


def test_dreams_are_kept_above_threshold(
    samples_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama
) -> None:
    """With the LLM up, dreams are asked for distant strong pairs and kept by plausibility."""
    settings = settings_for(fake_ollama.url, monkeypatch)
    run_all(samples_store, settings)
    rows = samples_store.execute("SELECT a, b, plausibility, kept FROM dreams")
    assert rows, "no dream pair was eligible"
    for a, b, plausibility, kept in rows:
        assert a < b
        assert kept == (plausibility >= 0.5)
    members = dict(samples_store.execute("SELECT uid, episode_id FROM episode_members"))
    assert all(members[a] != members[b] for a, b, _, _ in rows)
    assert math.isfinite(sum(r[2] for r in rows))
