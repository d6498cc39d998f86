"""Recall: rank memories for a query by similarity × strength.

The query is embedded the way the stored vectors were: by the LLM for
LLM-embedded memories (when Ollama is available), lexically for the
fallback-embedded ones; each vector is compared only with its own kind.
score = similarity × strength × (0.8 + 0.1·recency + 0.1·access), where
recency = e^(−age_days/30) and access is relative to the most-accessed
memory: a mild preference for fresh and used memories among equals.
Returned memories have their access counted (retrieval strengthens).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from biomem.clients.http11 import ollama_http_client
from biomem.pipeline.base import OllamaFactory
from biomem.pipeline.embedding import lexical_embedding
from biomem.pipeline.llm import LLMSession
from biomem.store import DuckDBStore

__all__ = ["RecallHit", "recall"]

_RANK = """
WITH scored AS (
    SELECT m.uid, m.content, m.created_at, e.goal, s.strength, x.source,
           list_cosine_similarity(x.vector, $vector::FLOAT[]) AS similarity,
           exp(-greatest(0, epoch_us($now - m.created_at) / 86400e6) / 30) AS recency,
           CASE WHEN max(s.access_count) OVER () > 0
                THEN s.access_count / max(s.access_count) OVER () ELSE 0 END AS access
    FROM embeddings x
    JOIN memories m USING (uid)
    JOIN memory_state s USING (uid)
    LEFT JOIN enrichments e USING (uid)
    WHERE x.source = $source AND len(x.vector) = $dim
)
SELECT uid, content, created_at, goal, strength, similarity, recency, access, source,
       similarity * strength * (0.8 + 0.1 * recency + 0.1 * access) AS score
FROM scored
WHERE similarity > 0
ORDER BY score DESC, uid
LIMIT $k
"""


@dataclass(frozen=True, slots=True)
class RecallHit:
    """One recalled memory and why it ranked."""

    uid: str
    content: str
    created_at: datetime
    goal: str | None
    score: float
    similarity: float
    strength: float
    recency: float
    access: float
    embedding: str  # 'llm' or 'fallback'

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "content": self.content,
            "created_at": self.created_at.isoformat(),
            "goal": self.goal,
            "score": round(self.score, 4),
            "why": {
                "similarity": round(self.similarity, 4),
                "strength": round(self.strength, 4),
                "recency": round(self.recency, 4),
                "access": round(self.access, 4),
                "embedding": self.embedding,
            },
        }


async def _llm_vector(factory: OllamaFactory | None, query: str) -> list[float] | None:
    async with ollama_http_client() as http:
        client = factory(http) if factory is not None else None
        session = LLMSession(client, max_concurrency=1)
        if not await session.probe(embedding=True):
            return None
        outcome = await session.call(lambda c: c.embed([query]))
        return outcome.value[0] if outcome.value else None


def recall(
    store: DuckDBStore,
    query: str,
    *,
    k: int,
    dimensions: int,
    now: datetime,
    ollama: OllamaFactory | None,
) -> list[RecallHit]:
    """Return the ``k`` best memories for ``query``, counting their access."""
    candidates: list[RecallHit] = []
    llm_vector = asyncio.run(_llm_vector(ollama, query)) if ollama is not None else None
    searches: list[tuple[str, list[float]]] = [
        ("fallback", lexical_embedding(query, dim=dimensions))
    ]
    if llm_vector is not None:
        searches.insert(0, ("llm", llm_vector))
    for source, vector in searches:
        rows = store.execute(
            _RANK, {"vector": vector, "now": now, "source": source, "dim": len(vector), "k": k}
        )
        candidates.extend(
            RecallHit(
                uid=r[0],
                content=r[1],
                created_at=r[2],
                goal=r[3],
                strength=float(r[4]),
                similarity=float(r[5]),
                recency=float(r[6]),
                access=float(r[7]),
                embedding=str(r[8]),
                score=float(r[9]),
            )
            for r in rows
        )
    hits = sorted(candidates, key=lambda h: (-h.score, h.uid))[:k]
    if hits:
        store.execute(
            "UPDATE memory_state SET access_count = access_count + 1, last_accessed_at = ?"
            " WHERE uid IN (SELECT unnest(?::VARCHAR[]))",
            [now, [h.uid for h in hits]],
        )
    return hits
