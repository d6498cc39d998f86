"""Long-term semantic memory: embeddings and the k-nearest-neighbour network.

Embeddings come from Ollama's /api/embed; while it is unavailable, a lexical
embedding (hashed character n-grams, same dimension) stands in, marked
``source='fallback'`` and replaced once the LLM is back. Vectors of the two
sources are never compared with each other.

Each batch commits its embeddings with ``indexed = false``; the network step
(:mod:`biomem.pipeline.semantic_network`: exact for groups up to
``exact_max`` vectors, LSH beyond) then brings the k-nearest-neighbour network
up to date and marks them indexed in the same transaction, so a crash between
the two steps is finished by the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from biomem.clients.http11 import ollama_http_client
from biomem.clients.ollama import OllamaClient
from biomem.pipeline.base import StageContext, StageResult
from biomem.pipeline.embedding import lexical_embedding
from biomem.pipeline.llm import LLMSession, unless_stopped
from biomem.pipeline.semantic_network import update_network

__all__ = ["LongTermStage"]

# The to-do list is taken once per run, numbered, and read by number ranges:
# a join of all memories with all embeddings per batch made a run quadratic.
_SNAPSHOT = """
CREATE OR REPLACE TEMP TABLE long_term_todo AS
SELECT row_number() OVER (ORDER BY m.uid) AS n, m.uid, m.revision, m.content
FROM memories m LEFT JOIN embeddings e USING (uid)
WHERE e.uid IS NULL OR e.revision < m.revision OR (e.source = 'fallback' AND $redo)
"""

_TODO = """
SELECT uid, revision, content FROM long_term_todo
WHERE n > $after AND n <= $after + $limit ORDER BY n
"""

_UPSERT = """
INSERT INTO embeddings
SELECT unnest($uid::VARCHAR[]), unnest($revision::INTEGER[]), unnest($source::VARCHAR[]),
       unnest($model::VARCHAR[]), unnest($vector::FLOAT[][]), false, $now
ON CONFLICT (uid) DO UPDATE SET
    revision = excluded.revision, source = excluded.source, model = excluded.model,
    vector = excluded.vector, indexed = false, embedded_at = excluded.embedded_at
"""


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
        try:
            asyncio.run(self._embed(ctx, result))
        finally:
            ctx.store.execute("DROP TABLE IF EXISTS long_term_todo")
        result.detail.update(self._network(ctx))
        return result

    async def _embed(self, ctx: StageContext, result: StageResult) -> None:
        cfg = ctx.settings.pipeline.long_term
        concurrency = ctx.settings.ollama.max_concurrency
        async with ollama_http_client() as http:
            client = ctx.ollama(http) if ctx.ollama is not None else None
            session = LLMSession(client, max_concurrency=concurrency)
            await session.probe(embedding=True)
            if not session.available:
                result.detail["llm_unavailable"] = session.reason
            redo = session.available
            ctx.store.execute(_SNAPSHOT, {"redo": redo})
            row = ctx.store.fetchone("SELECT count(*) FROM long_term_todo")
            total = int(row[0]) if row else 0
            after = 0
            # One transaction holds up to `concurrency` requests' worth of texts.
            limit = cfg.batch_size * concurrency
            while not ctx.stop.is_set():
                rows = ctx.store.execute(_TODO, {"after": after, "limit": limit})
                if not rows:
                    return
                after += len(rows)
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

    def _network(self, ctx: StageContext) -> dict[str, object]:
        with ctx.store.transaction() as con:
            report = update_network(con, ctx.settings.pipeline.long_term, ctx.as_of)
        return report.as_detail()
