"""``GET /health`` answered before the framework: one rendering per snapshot, then bytes.

``/health`` is what load balancers and probes poll, often and in parallel.
The body changes only when the monitor takes a new snapshot (every check
interval), so rendering it for each request is wasted work: this pure ASGI
layer renders the snapshot once — through the very route code the API
documents, so the bytes are the same — and serves the cached bytes to every
request until the next snapshot. Everything else (and any ``/health``
request with a query string) goes to the FastAPI application unchanged.

Given ``refresh`` (an on-demand monitor's ``fresh_snapshot_async``), each
request first awaits it, so a stale result is checked again — once for all
concurrent requests — before the answer; ``max_age`` keys the rendering too,
as an on-demand result's Cache-Control max-age counts down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from biomem.health.model import HealthSnapshot

__all__ = ["CachedHealth", "Rendered"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One snapshot's response: status code, headers and body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class CachedHealth:
    """Serve ``GET``/``HEAD /health`` from the rendering of the current snapshot.

    Args:
        app: the API that serves everything else.
        snapshot: the monitor's current snapshot (never runs a check).
        render: the route's response for a snapshot and a max-age in seconds.
        max_age: the Cache-Control max-age now.
        refresh: awaited before each answer (an on-demand monitor's run), or None.
    """

    def __init__(
        self,
        app: ASGIApp,
        snapshot: Callable[[], HealthSnapshot],
        render: Callable[[HealthSnapshot, int], Rendered],
        *,
        max_age: Callable[[], int],
        refresh: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.app = app
        self._snapshot = snapshot
        self._render = render
        self._max_age = max_age
        self._refresh = refresh
        self._cached: tuple[HealthSnapshot, int, Rendered] | None = None

    def current(self) -> Rendered:
        snapshot = self._snapshot()
        max_age = self._max_age()
        cached = self._cached
        if cached is None or cached[0] is not snapshot or cached[1] != max_age:
            cached = (snapshot, max_age, self._render(snapshot, max_age))
            self._cached = cached  # one assignment: readers see the old triple or the new
        return cached[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/health"
            or scope["method"] not in ("GET", "HEAD")
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        try:
            if self._refresh is not None:
                await self._refresh()
            rendered = self.current()
        except Exception:  # noqa: BLE001 - the framework's path reports it properly
            await self.app(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": rendered.status, "headers": rendered.headers}
        )
        body = rendered.body if scope["method"] == "GET" else b""
        await send({"type": "http.response.body", "body": body})
