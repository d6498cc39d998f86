"""Short-term memory: each memory enriched (LLM, else fallback), then grouped into episodes.

Enrichment is incremental: a memory is (re)enriched when it has no enrichment,
when it changed since (revision), or when its enrichment came from the
fallback and the LLM is available again, so a degradation is never permanent.
Each batch commits its enrichments in one transaction; a run killed mid-way
resumes with the memories still lacking a current enrichment.

Episodes are recomputed from all enrichments in one transaction (a cheap
window query): a new episode starts after a gap longer than
``episode_gap_seconds``, or after a sixth of that gap when the memory shares
no topic and no entity with the one before; runs longer than
``max_episode_size`` are split. Only the rows that differ from the stored
episodes are written: a run that added memories after the last episode
writes just those memberships and the episodes they join or start.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from biomem.clients.http11 import ollama_http_client
from biomem.logging import get_logger
from biomem.pipeline.base import StageContext, StageResult
from biomem.pipeline.enrichment import (
    ENRICHMENT_SCHEMA,
    Enrichment,
    EnrichmentParseError,
    build_enrichment_messages,
    parse_enrichment,
)
from biomem.pipeline.heuristics import fallback_enrichment
from biomem.pipeline.llm import LLMSession

__all__ = ["ShortTermStage"]

log = get_logger(__name__)

# The to-do list is taken once per run, numbered; batches then read it by
# number. Joining all memories with all enrichments for every batch made a
# run quadratic in the store's size.
_SNAPSHOT = """
CREATE OR REPLACE TEMP TABLE short_term_todo AS
SELECT row_number() OVER (ORDER BY m.created_at, m.uid) AS n,
       m.uid, m.revision, m.content, m.created_at, m.metadata::VARCHAR AS metadata
FROM memories m LEFT JOIN enrichments e USING (uid)
WHERE e.uid IS NULL OR e.revision < m.revision OR (e.source = 'fallback' AND $redo)
ORDER BY n
"""

# A bounded range of n, not "n > after LIMIT": the latter is a top-N over every
# later row, once per batch (quadratic on a large backlog).
_TODO = """
SELECT uid, revision, content, created_at, metadata FROM short_term_todo
WHERE n > $after AND n <= $after + $limit ORDER BY n
"""

_UPSERT = """
INSERT INTO enrichments
SELECT unnest($uid::VARCHAR[]), unnest($revision::INTEGER[]), unnest($source::VARCHAR[]),
       unnest($model::VARCHAR[]), unnest($goal::VARCHAR[]), unnest($tasks::VARCHAR[][]),
       unnest($actions::VARCHAR[][]), unnest($entities::VARCHAR[][]),
       unnest($topics::VARCHAR[][]), unnest($sentiment::DOUBLE[]), $now
ON CONFLICT (uid) DO UPDATE SET
    revision = excluded.revision, source = excluded.source, model = excluded.model,
    goal = excluded.goal, tasks = excluded.tasks, actions = excluded.actions,
    entities = excluded.entities, topics = excluded.topics, sentiment = excluded.sentiment,
    enriched_at = excluded.enriched_at
"""

_STATE = """
INSERT INTO memory_state (uid, importance, base_strength, strength, updated_at)
SELECT uid, importance, importance, importance, $now
FROM (SELECT unnest($uid::VARCHAR[]) AS uid, unnest($importance::DOUBLE[]) AS importance)
ON CONFLICT (uid) DO UPDATE SET importance = excluded.importance
"""

# Once per run, not per batch: a memory whose current revision is enriched
# no longer waits for recomputation (a killed run leaves it for the next).
_CLEAN = """
UPDATE memories SET needs_recompute = false
FROM enrichments e
WHERE memories.uid = e.uid AND memories.revision = e.revision AND memories.needs_recompute
"""

# Two sorts, not four: the lags and the row number share one ordered window;
# a group's start is the latest break at or before a row (a running max over
# the row number, an integer sort), so the position in the episode is
# arithmetic and the episode's first memory is found by a join on its row
# number. (Windows partitioned by group, then by group and chunk, sorted the
# million rows twice more by (created_at, uid).)
_EPISODES = """
CREATE OR REPLACE TEMP TABLE episode_stage AS
WITH ordered AS (
    SELECT m.uid, m.created_at, e.goal, e.topics, e.entities,
           COALESCE(s.importance, 0.5) AS importance,
           row_number() OVER w AS rn,
           lag(m.created_at) OVER w AS prev_at,
           lag(e.topics) OVER w AS prev_topics,
           lag(e.entities) OVER w AS prev_entities
    FROM memories m JOIN enrichments e USING (uid) LEFT JOIN memory_state s USING (uid)
    WINDOW w AS (ORDER BY m.created_at, m.uid)
), flagged AS (
    SELECT uid, created_at, goal, topics, importance, rn, CASE
        WHEN prev_at IS NULL THEN true
        WHEN epoch_us(created_at - prev_at) > $gap_us THEN true
        WHEN epoch_us(created_at - prev_at) > $gap_us / 6
             AND NOT list_has_any(topics, prev_topics)
             AND NOT list_has_any(entities, prev_entities) THEN true
        ELSE false END AS brk
    FROM ordered
), placed AS (
    -- Runs longer than max_size are cut every max_size rows from the group's start.
    SELECT *, (rn - max(CASE WHEN brk THEN rn END) OVER (ORDER BY rn ROWS UNBOUNDED PRECEDING))
              % $max_size AS pos
    FROM flagged
)
SELECT p.uid, p.created_at, p.goal, p.topics, p.importance,
       'ep:' || f.uid AS episode_id, CAST(p.pos AS INTEGER) AS position
FROM placed p JOIN (SELECT rn, uid FROM placed WHERE pos = 0) f ON f.rn = p.rn - p.pos
"""

_EPISODE_ROWS = """
CREATE OR REPLACE TEMP TABLE episode_rows AS
WITH topic_counts AS (
    SELECT episode_id, topic, count(*) AS n
    FROM (SELECT episode_id, unnest(topics) AS topic FROM episode_stage)
    GROUP BY ALL
), top_topics AS (
    SELECT episode_id, list(topic ORDER BY n DESC, topic)[1:3] AS topics
    FROM topic_counts GROUP BY episode_id
)
SELECT s.episode_id, min(s.created_at) AS started_at, max(s.created_at) AS ended_at,
       CAST(count(*) AS INTEGER) AS size,
       arg_max(s.goal, s.importance * 1e9 - s.position) AS goal,
       COALESCE(any_value(t.topics), CAST([] AS VARCHAR[])) AS topics
FROM episode_stage s LEFT JOIN top_topics t USING (episode_id)
GROUP BY s.episode_id
"""

# The grouping is recomputed whole, but only the rows that differ are written.
# Deleting every row of a table with a primary key and inserting the same keys
# again costs DuckDB ~18 us a row at COMMIT (the index entries of the deleted
# rows are removed one by one): 18 s of a 20-26 s regrouping at 1M memories
# (0.3-2.8 s at 100k). Most runs only add memories after the last episode, so
# almost every membership is unchanged; a changed one is an in-place UPDATE of
# columns outside the key, and a key is deleted only when it is really gone.
# The tables end up equal to the full recomputation either way.
_MEMBERS_DELETE = """
DELETE FROM episode_members WHERE uid IN (
    SELECT uid FROM episode_members ANTI JOIN episode_stage USING (uid)
)
"""

_MEMBERS_UPDATE = """
UPDATE episode_members SET episode_id = s.episode_id, position = s.position
FROM episode_stage s
WHERE episode_members.uid = s.uid
  AND (episode_members.episode_id <> s.episode_id OR episode_members.position <> s.position)
"""

_MEMBERS_INSERT = """
INSERT INTO episode_members
SELECT s.uid, s.episode_id, s.position FROM episode_stage s ANTI JOIN episode_members USING (uid)
"""

_EPISODES_DELETE = """
DELETE FROM episodes WHERE episode_id IN (
    SELECT episode_id FROM episodes ANTI JOIN episode_rows USING (episode_id)
)
"""

_EPISODES_UPDATE = """
UPDATE episodes SET started_at = r.started_at, ended_at = r.ended_at, size = r.size,
                    goal = r.goal, topics = r.topics
FROM episode_rows r
WHERE episodes.episode_id = r.episode_id
  AND (episodes.started_at IS DISTINCT FROM r.started_at
       OR episodes.ended_at IS DISTINCT FROM r.ended_at
       OR episodes.size IS DISTINCT FROM r.size
       OR episodes.goal IS DISTINCT FROM r.goal
       OR episodes.topics IS DISTINCT FROM r.topics)
"""

_EPISODES_INSERT = """
INSERT INTO episodes
SELECT r.episode_id, r.started_at, r.ended_at, r.size, r.goal, r.topics
FROM episode_rows r ANTI JOIN episodes USING (episode_id)
"""


# Deletes first, so that an insert never meets a key deleted in the same transaction.
_MEMBERS_SQL = (_MEMBERS_DELETE, _MEMBERS_UPDATE, _MEMBERS_INSERT)
_EPISODES_SQL = (_EPISODES_DELETE, _EPISODES_UPDATE, _EPISODES_INSERT)


def _changed(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """Run a DELETE, UPDATE or INSERT and return how many rows it changed."""
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Regrouped:
    """What a regrouping found and wrote."""

    episodes: int  # episodes in the store afterwards
    members_written: int  # memberships inserted, changed or removed
    episodes_written: int  # episode rows inserted, changed or removed


@dataclass(frozen=True, slots=True)
class _Todo:
    uid: str
    revision: int
    content: str
    created_at: datetime
    metadata: dict[str, Any]


def _importance(metadata: dict[str, Any]) -> float:
    value = metadata.get("importance")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(1.0, max(0.0, float(value)))
    return 0.5


class ShortTermStage:
    """Enrich memories and group them into episodes (reads ingest)."""

    name = "short_term"
    after: tuple[str, ...] = ()

    def run(self, ctx: StageContext) -> StageResult:
        result = StageResult()
        try:
            asyncio.run(self._enrich(ctx, result))
        finally:
            ctx.store.execute("DROP TABLE IF EXISTS short_term_todo")
        if not result.interrupted:
            regrouped = self._regroup(ctx)
            result.detail["episodes"] = regrouped.episodes
            result.detail["episode_members_written"] = regrouped.members_written
            result.detail["episodes_written"] = regrouped.episodes_written
        return result

    async def _enrich(self, ctx: StageContext, result: StageResult) -> None:
        async with ollama_http_client() as http:
            client = ctx.ollama(http) if ctx.ollama is not None else None
            session = LLMSession(client, max_concurrency=ctx.settings.ollama.max_concurrency)
            await session.probe()
            if not session.available:
                result.detail["llm_unavailable"] = session.reason
            redo = session.available
            ctx.store.execute(_SNAPSHOT, {"redo": redo})
            row = ctx.store.fetchone("SELECT count(*) FROM short_term_todo")
            total = int(row[0]) if row else 0
            known = self._known_entities(ctx)
            await self._stream(ctx, session, known, total, result)
            if not result.interrupted:
                ctx.store.execute(_CLEAN)

    async def _stream(
        self,
        ctx: StageContext,
        session: LLMSession,
        known: frozenset[str],
        total: int,
        result: StageResult,
    ) -> None:
        """Keep the LLM busy and commit finished enrichments in batches.

        A gather per batch left every slot idle while the slowest call of the
        batch finished and the batch was written; here up to twice the
        concurrency limit are in flight at all times (the policy's bulkhead
        bounds the requests themselves) and finished ones are committed
        together every ``commit_seconds`` (or once ``commit_max`` wait): a
        commit costs ~20 ms whatever its size, so groups of 64 made the
        fallback spend most of a large backlog committing, while a slow LLM
        still commits every second. Commits and the next page of work run in a
        worker thread (the store serialises them), so the requests in flight
        are answered and new ones sent while DuckDB writes. What is in flight,
        or finished but not yet committed, when the process dies is done again
        by the next run.
        """
        cfg = ctx.settings.pipeline.short_term
        batch_size = cfg.batch_size
        last_commit = ctx.clock()
        window = max(2 * ctx.settings.ollama.max_concurrency, 1)
        queue: list[_Todo] = []
        after = 0
        exhausted = False
        running: dict[asyncio.Task[tuple[Enrichment, str]], _Todo] = {}
        finished: list[tuple[_Todo, tuple[Enrichment, str]]] = []
        writing: asyncio.Task[None] | None = None

        async def write(batch: list[tuple[_Todo, tuple[Enrichment, str]]]) -> None:
            todo, done = [t for t, _ in batch], [d for _, d in batch]
            await asyncio.to_thread(self._write, ctx, todo, done, session)
            for _, source in done:
                result.items += 1
                if source == "llm":
                    result.llm += 1
                else:
                    result.fallback += 1
            ctx.report(result.items, total)

        async def settle() -> None:
            # The write in flight, if any, committed (or its error raised).
            nonlocal writing
            if writing is not None:
                pending, writing = writing, None
                await pending

        async def flush() -> None:
            # One write at a time, in order, in a worker thread: the event loop
            # keeps the LLM requests going while DuckDB commits.
            nonlocal writing
            await settle()
            if finished:
                writing = asyncio.ensure_future(write(finished.copy()))
                finished.clear()

        try:
            while True:
                while len(running) < window and not ctx.stop.is_set():
                    if not queue and not exhausted:
                        rows = await asyncio.to_thread(
                            ctx.store.execute, _TODO, {"after": after, "limit": batch_size}
                        )
                        after += len(rows)
                        exhausted = len(rows) < batch_size
                        queue = [_Todo(r[0], int(r[1]), r[2], r[3], json.loads(r[4])) for r in rows]
                    if not queue:
                        break
                    item = queue.pop(0)
                    running[asyncio.ensure_future(self._one(session, item, known))] = item
                if not running:
                    break
                done, _ = await asyncio.wait(
                    running, timeout=0.1, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    finished.append((running.pop(task), task.result()))
                if ctx.stop.is_set():
                    result.interrupted = True
                    break
                if finished and (
                    len(finished) >= cfg.commit_max
                    or ctx.clock() - last_commit >= cfg.commit_seconds
                ):
                    await flush()
                    last_commit = ctx.clock()
        except BaseException:
            # A write already in its thread cannot be stopped: let it finish
            # (it commits whole or not at all) before the error goes on.
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)
            raise
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        # Finished work is complete work: commit it, even when stopping.
        await flush()
        await settle()

    async def _one(
        self, session: LLMSession, todo: _Todo, known: frozenset[str]
    ) -> tuple[Enrichment, str]:
        messages = build_enrichment_messages(
            todo.content,
            created_at_iso=todo.created_at.isoformat(),
            metadata_json=json.dumps(todo.metadata, ensure_ascii=False),
        )
        # A malformed answer is repaired by the parser when possible, asked
        # again once, and otherwise left to the fallback: never a crash.
        for _attempt in range(2):
            outcome = await session.call(
                lambda client: client.chat_json(messages, schema=ENRICHMENT_SCHEMA)
            )
            if outcome.value is None:
                break
            try:
                return parse_enrichment(outcome.value), "llm"
            except EnrichmentParseError:
                continue
        return (
            fallback_enrichment(todo.content, metadata=todo.metadata, known_entities=known),
            "fallback",
        )

    def _write(
        self,
        ctx: StageContext,
        todo: list[_Todo],
        done: list[tuple[Enrichment, str]],
        session: LLMSession,
    ) -> None:
        model = session.client.model if session.client is not None else None
        uids = [item.uid for item in todo]
        revisions = [item.revision for item in todo]
        enrichments = [enrichment for enrichment, _ in done]
        sources = [source for _, source in done]
        # One statement per table for the whole batch, in one transaction.
        with ctx.store.transaction() as con:
            con.execute(
                _UPSERT,
                {
                    "uid": uids,
                    "revision": revisions,
                    "source": sources,
                    "model": [model if source == "llm" else None for source in sources],
                    "goal": [e.goal for e in enrichments],
                    "tasks": [list(e.tasks) for e in enrichments],
                    "actions": [list(e.actions) for e in enrichments],
                    "entities": [list(e.entities) for e in enrichments],
                    "topics": [list(e.topics) for e in enrichments],
                    "sentiment": [e.sentiment for e in enrichments],
                    "now": ctx.as_of,
                },
            )
            con.execute(
                _STATE,
                {
                    "uid": uids,
                    "importance": [_importance(item.metadata) for item in todo],
                    "now": ctx.as_of,
                },
            )

    def _known_entities(self, ctx: StageContext) -> frozenset[str]:
        rows = ctx.store.execute(
            "SELECT entity FROM (SELECT unnest(entities) AS entity FROM enrichments)"
            " GROUP BY entity HAVING count(*) >= 2"
        )
        return frozenset(str(r[0]) for r in rows)

    def _episodes(self, ctx: StageContext) -> int:
        """Regroup all enriched memories into episodes; return how many there are."""
        return self._regroup(ctx).episodes

    def _regroup(self, ctx: StageContext) -> _Regrouped:
        cfg = ctx.settings.pipeline.short_term
        # One transaction: a reader never sees half the episodes.
        with ctx.store.transaction() as con:
            con.execute(
                _EPISODES,
                {
                    "gap_us": int(cfg.episode_gap_seconds * 1_000_000),
                    "max_size": cfg.max_episode_size,
                },
            )
            con.execute(_EPISODE_ROWS)
            members = sum(_changed(con, sql) for sql in _MEMBERS_SQL)
            episodes = sum(_changed(con, sql) for sql in _EPISODES_SQL)
            row = con.execute("SELECT count(*) FROM episodes").fetchone()
            con.execute("DROP TABLE episode_rows")
            con.execute("DROP TABLE episode_stage")
        regrouped = _Regrouped(
            episodes=int(row[0]) if row else 0,
            members_written=members,
            episodes_written=episodes,
        )
        log.debug(
            "episodes_regrouped",
            episodes=regrouped.episodes,
            members_written=regrouped.members_written,
            episodes_written=regrouped.episodes_written,
        )
        return regrouped
