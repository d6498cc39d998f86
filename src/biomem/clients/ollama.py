"""The Ollama client: async HTTP over an injected ``httpx.AsyncClient``.

Errors are translated once, here: transport failures and 429/5xx become
:class:`LLMUnavailable` (with ``retry_after`` when Ollama sent one), other
4xx :class:`LLMRequestError`, unreadable bodies :class:`LLMResponseError`.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from biomem.clients.llm_cache import LLMCache, request_key
from biomem.resilience.errors import (
    DependencyError,
    LLMRequestError,
    LLMResponseError,
    LLMUnavailable,
)
from biomem.resilience.policy import Policy
from biomem.resilience.redact import redact_text

__all__ = [
    "OllamaClient",
    "OllamaModels",
    "classify_httpx_error",
    "parse_retry_after",
    "translate_errors",
]

_NAME = "ollama"
T = TypeVar("T")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_RECENT_KEYS = 1024  # well above the requests one run has in flight


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# Most specific first; a test walks httpx's exception classes against this table.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[DependencyError]], ...] = (
    (httpx.UnsupportedProtocol, LLMRequestError),  # OLLAMA_URL's scheme: configuration
    (httpx.LocalProtocolError, LLMRequestError),  # we built a bad request
    (httpx.TimeoutException, LLMUnavailable),
    (httpx.TransportError, LLMUnavailable),  # connect/read/write errors, dropped mid-answer
    (httpx.DecodingError, LLMResponseError),  # a body we cannot decode
    (httpx.TooManyRedirects, LLMResponseError),
    (httpx.HTTPStatusError, LLMUnavailable),
    (httpx.InvalidURL, LLMRequestError),
    (httpx.CookieConflict, LLMResponseError),
    (httpx.StreamError, LLMResponseError),
    (httpx.HTTPError, LLMUnavailable),
)


def classify_httpx_error(exc: BaseException) -> type[DependencyError] | None:
    """Return the biomem error class for an httpx exception, or None if not httpx's."""
    for foreign, ours in _HTTPX_ERRORS:
        if isinstance(exc, foreign):
            return ours
    return None


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map httpx exceptions to biomem's at the boundary, ``raise ... from``."""
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError) as exc:
        cls = classify_httpx_error(exc) or LLMUnavailable
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        detail = redact_text(str(exc)) or kind
        message = f"{kind}: {detail}" if detail != kind else kind
        if cls is LLMRequestError:
            raise LLMRequestError(_NAME, message, status=0) from exc
        raise cls(_NAME, message) from exc


@dataclass(frozen=True, slots=True)
class OllamaModels:
    """The models Ollama reports and whether the configured ones are among them."""

    available: tuple[str, ...]
    chat_present: bool
    embedding_present: bool


def _model_matches(wanted: str, available: Sequence[str]) -> bool:
    # "llama3.2" names "llama3.2:latest"; a tagged name must match exactly.
    names = set(available)
    return wanted in names or (":" not in wanted and f"{wanted}:latest" in names)


class OllamaClient:
    """Calls to one Ollama server.

    Args:
        http: the transport, owned by the caller (the app factory or a test).
        base_url: Ollama's URL, e.g. ``http://localhost:11434``.
        model: the chat model.
        embedding_model: the embedding model.
        timeout_s: the limit for one request, connect to last byte.
        policy: the ollama policy (breaker, retry, bulkhead, timeout); every request
            goes through it. None only in tests of the client itself.
        cache: answers to chat and embed requests, reused for the same request
            to the same model (the process's one cache; recovery clears it).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        embedding_model: str,
        timeout_s: float = 60.0,
        policy: Policy | None = None,
        cache: LLMCache | None = None,
    ) -> None:
        self._http = http
        self._cache = cache
        # Keys this client asked for lately: the same request again is a caller's
        # retry of an answer it rejected, which must reach Ollama, not the cache.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._policy = policy
        self._base = base_url.rstrip("/")
        self.model = model
        self.embedding_model = embedding_model
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))

    async def _guarded(
        self, operation: str, fn: Callable[[], Awaitable[T]], *, retry: bool = True
    ) -> T:
        if self._policy is None:
            return await fn()
        return await self._policy.acall(fn, operation=operation, retry=retry)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            async with translate_errors():
                response = await self._http.post(
                    self._base + path, json=body, timeout=self._timeout
                )
            return self._read(response, path)

        return await self._guarded(path, once)

    def _read(self, response: httpx.Response, path: str) -> dict[str, Any]:
        status = response.status_code
        if status >= 400:
            reason = _error_text(response)
            if status in _TRANSIENT_STATUS:
                raise LLMUnavailable(
                    _NAME,
                    f"{path} answered HTTP {status}: {reason}",
                    status=status,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            raise LLMRequestError(_NAME, f"{path} answered HTTP {status}: {reason}", status=status)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMResponseError(_NAME, f"{path} answered with malformed JSON") from exc
        if not isinstance(data, dict):
            raise LLMResponseError(
                _NAME, f"{path} answered with {type(data).__name__}, not an object"
            )
        return data

    def _first_ask(self, key: str) -> bool:
        """True the first time (lately) this client asks for ``key``; False for a retry."""
        if key in self._recent:
            self._recent.move_to_end(key)
            return False
        self._recent[key] = None
        if len(self._recent) > _RECENT_KEYS:
            self._recent.popitem(last=False)
        return True

    async def models(self, *, retry: bool = True) -> OllamaModels:
        """GET /api/tags: the installed models (``retry=False`` for health probes)."""

        async def once() -> dict[str, Any]:
            async with translate_errors():
                response = await self._http.get(self._base + "/api/tags", timeout=self._timeout)
            return self._read(response, "/api/tags")

        data = await self._guarded("/api/tags", once, retry=retry)
        entries = data.get("models")
        if not isinstance(entries, list):
            raise LLMResponseError(_NAME, "/api/tags answered without a models list")
        names = tuple(
            str(entry.get("name") or entry.get("model"))
            for entry in entries
            if isinstance(entry, dict) and (entry.get("name") or entry.get("model"))
        )
        return OllamaModels(
            available=names,
            chat_present=_model_matches(self.model, names),
            embedding_present=_model_matches(self.embedding_model, names),
        )

    async def chat_json(self, messages: Sequence[dict[str, str]], *, schema: dict[str, Any]) -> str:
        """POST /api/chat asking for a JSON answer shaped by ``schema``; return the text.

        The text is returned unparsed: the caller validates and repairs it.
        """
        body = {
            "model": self.model,
            "messages": list(messages),
            "format": schema,
            "stream": False,
            # Temperature 0: the same memory gets the same enrichment (and may be cached).
            "options": {"temperature": 0},
        }
        key = request_key(self.model, "/api/chat", body) if self._cache is not None else ""
        if self._cache is not None and self._first_ask(key):
            cached = self._cache.get_text(key)
            if cached is not None:
                return cached
        data = await self._post("/api/chat", body)
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMResponseError(_NAME, "/api/chat answered without message.content")
        if self._cache is not None:
            self._cache.put_text(key, content)
        return content

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """POST /api/embed: one embedding per text, in order."""
        body = {"model": self.embedding_model, "input": list(texts)}
        key = (
            request_key(self.embedding_model, "/api/embed", body) if self._cache is not None else ""
        )
        if self._cache is not None and self._first_ask(key):
            vectors_cached = self._cache.get_vectors(key)
            if vectors_cached is not None:
                return vectors_cached
        data = await self._post("/api/embed", body)
        vectors = data.get("embeddings")
        if (
            not isinstance(vectors, list)
            or len(vectors) != len(texts)
            or not all(isinstance(v, list) and v for v in vectors)
        ):
            raise LLMResponseError(_NAME, "/api/embed answered without one embedding per input")
        try:
            result = [[float(x) for x in vector] for vector in vectors]
        except (TypeError, ValueError) as exc:
            raise LLMResponseError(_NAME, "/api/embed answered non-numeric embeddings") from exc
        if self._cache is not None:
            self._cache.put_vectors(key, result)
        return result


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return redact_text(data["error"])[:300]
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    return redact_text(response.text[:300]) or response.reason_phrase
