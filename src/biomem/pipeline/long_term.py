"""Long-term semantic memory: embeddings and the k-nearest-neighbour network.

Embeddings come from Ollama's /api/embed; while it is unavailable, a lexical
embedding (hashed character n-grams, same dimension) stands in, marked
``source='fallback'`` and replaced once the LLM is back. Vectors of the two
sources are never compared with each other.

Each batch commits its embeddings with ``indexed = false``; the network step
then recomputes, exactly, the neighbours of every memory the new vectors can
affect (the new ones, those that pointed at a changed one, and those now
similar enough to one) and marks them indexed in the same transaction, so a
crash between the two steps is finished by the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from biomem.clients.ollama import OllamaClient
from biomem.pipeline.base import StageContext, StageResult
from biomem.pipeline.embedding import lexical_embedding
from biomem.pipeline.llm import LLMSession, unless_stopped

__all__ = ["LongTermStage"]

_TODO = """
SELECT m.uid, m.revision, m.content
FROM memories m LEFT JOIN embeddings e USING (uid)
WHERE (e.uid IS NULL OR e.revision < m.revision OR (e.source = 'fallback' AND $redo))
  AND m.uid > $after
ORDER BY m.uid
LIMIT $limit
"""

_COUNT = """
SELECT count(*) FROM memories m LEFT JOIN embeddings e USING (uid)
WHERE e.uid IS NULL OR e.revision < m.revision OR (e.source = 'fallback' AND $redo)
"""

_UPSERT = """
INSERT INTO embeddings
SELECT unnest($uid::VARCHAR[]), unnest($revision::INTEGER[]), unnest($source::VARCHAR[]),
       unnest($model::VARCHAR[]), unnest($vector::FLOAT[][]), false, $now
ON CONFLICT (uid) DO UPDATE SET
    revision = excluded.revision, source = excluded.source, model = excluded.model,
    vector = excluded.vector, indexed = false, embedded_at = excluded.embedded_at
"""

# Comparable vectors: same source, same length.
_PEER = "y.source = x.source AND len(y.vector) = len(x.vector) AND y.uid <> x.uid"

# Run in order, in one transaction (DuckDB binds parameters per statement).
_NETWORK = (
    "CREATE OR REPLACE TEMP TABLE knn_changed AS SELECT uid FROM embeddings WHERE NOT indexed",
    f"""
    CREATE OR REPLACE TEMP TABLE knn_affected AS
        SELECT uid FROM knn_changed
        UNION SELECT a FROM semantic_edges WHERE b IN (SELECT uid FROM knn_changed)
        UNION SELECT y.uid FROM knn_changed c
              JOIN embeddings x ON x.uid = c.uid JOIN embeddings y ON {_PEER}
              WHERE list_cosine_similarity(x.vector, y.vector) >= $min_cosine
    """,
    "DELETE FROM semantic_edges WHERE a IN (SELECT uid FROM knn_affected)",
    f"""
    INSERT INTO semantic_edges
    SELECT a, b, similarity, CAST(rank AS INTEGER) FROM (
        SELECT x.uid AS a, y.uid AS b, list_cosine_similarity(x.vector, y.vector) AS similarity,
               row_number() OVER (PARTITION BY x.uid ORDER BY similarity DESC, y.uid) AS rank
        FROM knn_affected f JOIN embeddings x ON x.uid = f.uid JOIN embeddings y ON {_PEER}
        WHERE list_cosine_similarity(x.vector, y.vector) >= $min_cosine
    ) WHERE rank <= $k
    """,
    "UPDATE embeddings SET indexed = true WHERE NOT indexed",
)


def _embed_call(texts: list[str]) -> Callable[[OllamaClient], Awaitable[list[list[float]]]]:
    async def call(client: OllamaClient) -> list[list[float]]:
        return await client.embed(texts)

    return call


class LongTermStage:
    """Embed memories and maintain the semantic network (reads ingest)."""

    name = "long_term"
    after: tuple[str, ...] = ("short_term",)

    def run(self, ctx: StageContext) -> StageResult:
        result = StageResult()
        asyncio.run(self._embed(ctx, result))
        result.detail["affected"] = self._network(ctx)
        return result

    async def _embed(self, ctx: StageContext, result: StageResult) -> None:
        cfg = ctx.settings.pipeline.long_term
        concurrency = ctx.settings.ollama.max_concurrency
        async with httpx.AsyncClient() as http:
            client = ctx.ollama(http) if ctx.ollama is not None else None
            session = LLMSession(client, max_concurrency=concurrency)
            await session.probe(embedding=True)
            if not session.available:
                result.detail["llm_unavailable"] = session.reason
            redo = session.available
            row = ctx.store.fetchone(_COUNT, {"redo": redo})
            total = int(row[0]) if row else 0
            after = ""
            # One transaction holds up to `concurrency` requests' worth of texts.
            limit = cfg.batch_size * concurrency
            while not ctx.stop.is_set():
                rows = ctx.store.execute(_TODO, {"redo": redo, "after": after, "limit": limit})
                if not rows:
                    return
                after = str(rows[-1][0])
                chunks = [rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
                outcomes = await unless_stopped(
                    asyncio.gather(
                        *(session.call(_embed_call([str(r[2]) for r in chunk])) for chunk in chunks)
                    ),
                    ctx.stop,
                )
                if outcomes is None:
                    break
                model = client.embedding_model if client is not None else None
                batch: dict[str, list[object]] = {
                    "uid": [],
                    "revision": [],
                    "source": [],
                    "model": [],
                    "vector": [],
                }
                for chunk, outcome in zip(chunks, outcomes, strict=True):
                    vectors = outcome.value
                    for index, (uid, revision, content) in enumerate(chunk):
                        if vectors is not None:
                            vector, source = vectors[index], "llm"
                            result.llm += 1
                        else:
                            vector = lexical_embedding(str(content), dim=cfg.dimensions)
                            source = "fallback"
                            result.fallback += 1
                        batch["uid"].append(uid)
                        batch["revision"].append(revision)
                        batch["source"].append(source)
                        batch["model"].append(model if source == "llm" else None)
                        batch["vector"].append(vector)
                with ctx.store.transaction() as con:
                    con.execute(_UPSERT, {**batch, "now": ctx.as_of})
                result.items += len(rows)
                ctx.report(result.items, total)
            result.interrupted = True

    def _network(self, ctx: StageContext) -> int:
        cfg = ctx.settings.pipeline.long_term
        with ctx.store.transaction() as con:
            params = {"min_cosine": cfg.min_cosine, "k": cfg.neighbours}
            for statement in _NETWORK:
                used = {name: value for name, value in params.items() if f"${name}" in statement}
                con.execute(statement, used or None)
            row = con.execute("SELECT count(*) FROM knn_affected").fetchone()
            con.execute("DROP TABLE knn_changed")
            con.execute("DROP TABLE knn_affected")
        return int(row[0]) if row else 0
