"""A bounded, in-process LRU cache of LLM answers (chat JSON texts and embeddings).

Enrichment runs at temperature 0 and embeddings are deterministic, so the same
request to the same model gets the same answer: a memory redone after a
fallback, or a text embedded twice, need not wait for Ollama again. Keys are
a SHA-256 of the model and the canonical JSON of the request, so a changed
prompt, schema or model never hits an old answer. The cache is bounded both
by entries and by an estimate of the bytes held (embeddings are kept as
``array('d')``, 8 bytes a number, not as lists of Python floats); the least
recently used answers go first. Recovery's "clear the LLM response cache"
empties it and reports what it held.
"""

from __future__ import annotations

import hashlib
import json
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheStats", "LLMCache", "request_key"]

_ENTRY_OVERHEAD_BYTES = 200  # key, node and object headers, roughly


def request_key(model: str, path: str, body: Mapping[str, Any]) -> str:
    """The cache key of one request: model, endpoint and the body, canonically."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256()
    for part in (model, path, canonical):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds and how it was used since it was made (or last cleared)."""

    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int


_Value = str | tuple["array[float]", ...]


def _size(value: _Value) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8")) + _ENTRY_OVERHEAD_BYTES
    return sum(v.itemsize * len(v) for v in value) + _ENTRY_OVERHEAD_BYTES


class LLMCache:
    """A thread-safe LRU of answers, bounded by ``max_entries`` and ``max_bytes``.

    Args:
        max_entries: answers kept at most.
        max_bytes: estimated bytes kept at most; a single answer larger than
            this is not kept.
    """

    def __init__(self, *, max_entries: int = 4096, max_bytes: int = 32 * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[_Value, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _get(self, key: str) -> _Value | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def _put(self, key: str, value: _Value) -> None:
        size = _size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1

    def get_text(self, key: str) -> str | None:
        """A cached chat answer, or None."""
        value = self._get(key)
        return value if isinstance(value, str) else None

    def put_text(self, key: str, text: str) -> None:
        self._put(key, text)

    def get_vectors(self, key: str) -> list[list[float]] | None:
        """Cached embeddings (fresh lists the caller may change), or None."""
        value = self._get(key)
        if value is None or isinstance(value, str):
            return None
        return [v.tolist() for v in value]

    def put_vectors(self, key: str, vectors: Sequence[Sequence[float]]) -> None:
        self._put(key, tuple(array("d", v) for v in vectors))

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._items),
                bytes=self._bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
            )

    def clear(self) -> CacheStats:
        """Drop every answer; return what was held (entries, bytes) before."""
        with self._lock:
            before = CacheStats(
                entries=len(self._items),
                bytes=self._bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
            )
            self._items.clear()
            self._bytes = 0
            return before
