"""The LLM response cache behind "clear the LLM response cache": bounded, used by the Ollama
client for the same request to the same model, never in the way of a caller's retry."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from biomem.clients.llm_cache import LLMCache, request_key
from biomem.clients.ollama import OllamaClient
from biomem.pipeline.enrichment import ENRICHMENT_SCHEMA

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Standup: the staging database is full again."}]


def test_cache_is_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used answer goes; clear reports what it held."""
    cache = LLMCache(max_entries=2)
    cache.put_text("a", "1")
    cache.put_text("b", "2")
    assert cache.get_text("a") == "1"
    cache.put_text("c", "3")
    assert (cache.get_text("b"), cache.get_text("a"), cache.get_text("c")) == (None, "1", "3")
    held = cache.clear()
    assert (held.entries, held.evictions) == (2, 1) and len(cache) == 0


def test_cache_is_bounded_by_bytes_too() -> None:
    """Embeddings are kept as doubles; a byte budget evicts the oldest and refuses a giant."""
    cache = LLMCache(max_entries=100, max_bytes=3 * (768 * 8 + 200))
    for n in range(5):
        cache.put_vectors(f"k{n}", [[float(n)] * 768])
    stats = cache.stats()
    assert stats.entries == 3 and stats.bytes <= cache.max_bytes
    assert cache.get_vectors("k0") is None and cache.get_vectors("k4") == [[4.0] * 768]
    cache.put_vectors("huge", [[0.0] * 100_000])
    assert cache.get_vectors("huge") is None


def test_keys_differ_by_model_path_and_body() -> None:
    """A changed model, endpoint or request never hits another's answer."""
    body = {"input": ["x"]}
    keys = {
        request_key("m1", "/api/embed", body),
        request_key("m2", "/api/embed", body),
        request_key("m1", "/api/chat", body),
        request_key("m1", "/api/embed", {"input": ["y"]}),
    }
    assert len(keys) == 4
    assert request_key("m", "/p", {"a": 1, "b": 2}) == request_key("m", "/p", {"b": 2, "a": 1})


def _client(http: httpx.AsyncClient, url: str, cache: LLMCache) -> OllamaClient:
    return OllamaClient(
        http, base_url=url, model="llama3.2", embedding_model="nomic-embed-text", cache=cache
    )


def test_a_callers_retry_reaches_ollama_and_the_next_run_hits_the_cache(fake_ollama: Any) -> None:
    """A rejected answer asked again goes to Ollama; a later run reuses the good answer."""
    cache = LLMCache()
    fake_ollama.malformed_content("garbage", count=1)

    async def one_run(times: int) -> list[str]:
        async with httpx.AsyncClient() as http:
            client = _client(http, fake_ollama.url, cache)
            return [
                await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA) for _ in range(times)
            ]

    bad, good = asyncio.run(one_run(2))  # the enrichment stage's one retry
    assert bad != good
    assert fake_ollama.request_count("/api/chat") == 2
    assert asyncio.run(one_run(1)) == [good]  # the next run: from the cache
    assert fake_ollama.request_count("/api/chat") == 2
    assert cache.stats().hits == 1
