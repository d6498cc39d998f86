"""Dreams: the LLM proposes creative associations between distant strong memories.

Candidates are the strongest memories (at least ``min_strength``); a pair is
eligible when its two memories lie in different episodes and share no topic,
and it has not been dreamt before. Pairs are taken in a stable pseudo-random
order (md5 of the pair) so reruns pick the same ones. Each answer is
validated (repaired when possible, asked again once); a dream is kept when
its plausibility reaches the threshold. While the LLM is unavailable nothing
is invented: the stage records the pairs as deferred and a later run dreams
them.
"""

from __future__ import annotations

import asyncio

from biomem.clients.http11 import ollama_http_client
from biomem.pipeline.base import StageContext, StageResult
from biomem.pipeline.enrichment import (
    DREAM_SCHEMA,
    Dream,
    DreamParseError,
    build_dream_messages,
    parse_dream,
)
from biomem.pipeline.llm import LLMSession, unless_stopped

__all__ = ["DreamStage"]

_PAIRS = """
WITH candidates AS (
    SELECT s.uid, s.strength, m.content, em.episode_id, e.topics
    FROM memory_state s
    JOIN memories m USING (uid)
    JOIN episode_members em USING (uid)
    JOIN enrichments e USING (uid)
    WHERE s.strength >= $min_strength AND m.created_at <= $as_of
    ORDER BY s.strength DESC, s.uid
    LIMIT $candidates
)
SELECT x.uid, y.uid, x.content, y.content
FROM candidates x JOIN candidates y
  ON x.uid < y.uid AND x.episode_id <> y.episode_id AND NOT list_has_any(x.topics, y.topics)
WHERE x.uid || '|' || y.uid NOT IN (SELECT dream_id FROM dreams)
ORDER BY md5(x.uid || '|' || y.uid)
LIMIT $per_run
"""


class DreamStage:
    """Creative associations (reads consolidation strengths and episodes)."""

    name = "dreams"
    after: tuple[str, ...] = ("consolidation", "long_term")

    def run(self, ctx: StageContext) -> StageResult:
        result = StageResult()
        asyncio.run(self._dream(ctx, result))
        return result

    async def _dream(self, ctx: StageContext, result: StageResult) -> None:
        cfg = ctx.settings.pipeline.dreams
        pairs = ctx.store.execute(
            _PAIRS,
            {
                "min_strength": cfg.min_strength,
                "as_of": ctx.as_of,
                "candidates": cfg.candidates,
                "per_run": cfg.per_run,
            },
        )
        if not pairs:
            return
        async with ollama_http_client() as http:
            client = ctx.ollama(http) if ctx.ollama is not None else None
            session = LLMSession(client, max_concurrency=ctx.settings.ollama.max_concurrency)
            if not await session.probe():
                # Deferred, not faked: nothing is written, the pairs wait.
                result.deferred = len(pairs)
                result.detail["llm_unavailable"] = session.reason
                return
            answers = await unless_stopped(
                asyncio.gather(*(self._one(session, str(a), str(b)) for _, _, a, b in pairs)),
                ctx.stop,
            )
        if answers is None:
            result.interrupted = True
            return
        kept = 0
        with ctx.store.transaction() as con:
            for (a, b, _, _), dream in zip(pairs, answers, strict=True):
                if dream is None:
                    result.deferred += 1
                    continue
                keep = dream.plausibility >= cfg.plausibility_threshold
                kept += keep
                con.execute(
                    "INSERT INTO dreams VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (dream_id) DO NOTHING",
                    [
                        f"{a}|{b}",
                        a,
                        b,
                        dream.link,
                        dream.type,
                        dream.plausibility,
                        dream.novelty,
                        keep,
                        session.client.model if session.client else None,
                        ctx.as_of,
                    ],
                )
                result.items += 1
                result.llm += 1
        result.detail["kept"] = kept

    async def _one(self, session: LLMSession, a: str, b: str) -> Dream | None:
        messages = build_dream_messages(a, b)
        for _attempt in range(2):
            outcome = await session.call(lambda c: c.chat_json(messages, schema=DREAM_SCHEMA))
            if outcome.value is None:
                return None
            try:
                return parse_dream(outcome.value)
            except DreamParseError:
                continue
        return None
