"""The LLM as one run sees it: probed once, bounded in concurrency, given up on quickly.

A run first asks Ollama for its models. When Ollama is down or lacks the model,
the whole run uses the fallback without waiting on timeouts. During the run,
a few consecutive transport failures stop further calls for the rest of the
run (the fallback takes over), so an Ollama that dies mid-run costs seconds,
not one timeout per memory. Across runs, the ollama policy's breaker does
the same: once it is open, calls are refused at once and the gate closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from biomem.clients.ollama import OllamaClient
from biomem.logging import get_logger
from biomem.resilience.errors import (
    CircuitOpenError,
    DependencyError,
    LLMRequestError,
    LLMResponseError,
)

__all__ = ["LLMSession", "Outcome", "unless_stopped"]

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The LLM's answer, or why there is none (then ``value`` is None)."""

    value: T | None
    error: str | None = None


class LLMSession:
    """One run's use of the LLM: availability, concurrency and a failure gate.

    Args:
        client: the Ollama client, or None for a run without LLM.
        max_concurrency: requests in flight at once.
        trip_after: consecutive transport failures after which the run stops calling.
    """

    def __init__(
        self, client: OllamaClient | None, *, max_concurrency: int, trip_after: int = 3
    ) -> None:
        self.client = client
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._trip_after = trip_after
        self._consecutive = 0
        self.available = False
        self.reason: str | None = "no LLM configured" if client is None else None

    async def probe(self, *, embedding: bool = False) -> bool:
        """Check Ollama answers and has the model; sets :attr:`available`."""
        if self.client is None:
            return False
        try:
            models = await self.client.models()
        except DependencyError as exc:
            self.reason = str(exc)
            self.available = False
            return False
        present = models.embedding_present if embedding else models.chat_present
        wanted = self.client.embedding_model if embedding else self.client.model
        self.available = present
        self.reason = None if present else f"ollama: model {wanted!r} is not installed"
        return present

    async def call(self, make: Callable[[OllamaClient], Awaitable[T]]) -> Outcome[T]:
        """Run one LLM call under the concurrency bound; never raises dependency errors."""
        if not self.available or self.client is None:
            return Outcome(None, self.reason or "LLM unavailable")
        async with self._semaphore:
            if not self.available:  # tripped while this call waited for a slot
                return Outcome(None, self.reason)
            try:
                value = await make(self.client)
            except LLMResponseError as exc:
                # Ollama is up but answered nonsense: not a reason to stop calling.
                return Outcome(None, str(exc))
            except DependencyError as exc:
                # Unavailable, refused (4xx), timed out, retries exhausted, or the
                # breaker open: the fallback takes over.
                self._failed(exc, permanent=isinstance(exc, LLMRequestError | CircuitOpenError))
                return Outcome(None, str(exc))
        self._consecutive = 0
        return Outcome(value)

    def _failed(self, exc: DependencyError, *, permanent: bool) -> None:
        self._consecutive += 1
        if permanent or self._consecutive >= self._trip_after:
            if self.available:
                log.warning("llm_gate_tripped", error=str(exc), consecutive=self._consecutive)
            self.available = False
            self.reason = str(exc)


async def unless_stopped(
    work: Awaitable[T], stop: threading.Event, *, poll_s: float = 0.1
) -> T | None:
    """Run ``work`` until it ends or ``stop`` is set; on stop, cancel it and return None.

    Shutdown must not wait for an LLM call that may take a minute: what is
    cancelled was not committed, and the next run does it again.
    """
    task = asyncio.ensure_future(work)
    while not task.done():
        if stop.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        await asyncio.wait({task}, timeout=poll_s)
    return task.result()
