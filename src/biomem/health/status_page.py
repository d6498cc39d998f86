"""``GET /status``: the page a person looks at, and ``GET /status/data``, what keeps it live.

One HTML page served by biomem itself: rendered on the server, with its
stylesheet and a small script inlined from ``biomem/health/static`` (no CDN,
no web font, nothing fetched from elsewhere). It stays live by polling
``/status/data`` — every half check interval, between 1 and 10 seconds — and
swapping in the sections the server rendered; polling rather than
server-sent events, so that no request is held open and the server stops at
once. The data endpoint returns the same document as JSON
(``{"status", "interval_s", "poll_ms", "data", "sections"}``).

Access follows ``/health/detailed``: when the API requires a token, both
paths need it — as ``Authorization: Bearer`` or, because a browser cannot
send a header from a link, as ``?token=``, compared in constant time. The
token is never written into the page (the script reads it from the address
bar and sends it back as a header) nor logged; ``Referrer-Policy:
no-referrer`` keeps it out of other sites' logs. A Content-Security-Policy
with hashes of the inline style and script means that even markup slipped
past escaping could not run.

Both paths are left out of ``/openapi.json``: the page is not an API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import biomem
from biomem.health.status_data import StatusSources, gather_status
from biomem.health.status_render import esc, render_sections

__all__ = ["add_status_routes", "poll_ms", "render_page"]

_TITLES = {
    "summary": "Overall",
    "components": "Components (last hour)",
    "stages": "Pipeline stages",
    "chart": "Memories over time",
    "breakers": "Circuit breakers",
    "alerts": "Alerts",
    "dead-letters": "Dead letters",
    "recovery": "Recovery",
}
_GRID = {"components"}  # sections laid out as a grid of cards


@cache
def _asset(name: str) -> str:
    return (resources.files("biomem.health") / "static" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@cache
def _headers() -> dict[str, str]:
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(_asset('status.js'))}",
            f"style-src {_sha256(_asset('status.css'))}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


def poll_ms(interval_s: float) -> int:
    """How often the page asks for fresh data: half a check interval, within 1–10 s.

    Half an interval so that a change the monitor saw is on screen well
    within two intervals of happening.
    """
    return int(min(10_000.0, max(1_000.0, interval_s * 500)))


def render_page(data: dict[str, Any]) -> str:
    """The whole page for ``data`` (a :func:`gather_status` document)."""
    sections = render_sections(data)
    blocks = []
    for name, inner in sections.items():
        grid = ' class="grid"' if name in _GRID else ""
        blocks.append(
            f'<section aria-labelledby="h-{name}"><h2 id="h-{name}">{esc(_TITLES[name])}</h2>'
            f'<div id="{name}"{grid}>{inner}</div></section>'
        )
    wire = esc(data["status"])
    return (
        "<!doctype html>\n"
        f'<html lang="en" data-wire="{wire}" data-poll-ms="{poll_ms(data["interval_s"])}">'
        '<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon: the browser would otherwise ask for /favicon.ico (a 404).
        '<link rel="icon" href="data:,">'
        f"<title>biomem: {wire}</title><style>{_asset('status.css')}</style></head><body>"
        '<header><h1>biomem status</h1><p id="live" class="live" aria-live="polite">'
        "static page: refreshes with JavaScript on</p></header>"
        f"<main>{''.join(blocks)}</main>"
        f"<footer>biomem {esc(biomem.__version__)} · JSON: /status/data, /health/detailed</footer>"
        f"<script>{_asset('status.js')}</script></body></html>"
    )


def _status_guard(token: str) -> Callable[..., None]:
    """Bearer header or ``?token=``; only installed when the API requires a token."""
    expected = token.encode()
    bearer = HTTPBearer(auto_error=False)

    def guard(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if credentials is not None:
            given = credentials.credentials
        else:
            given = request.query_params.get("token", "")
        if not (given and hmac.compare_digest(given.encode(), expected)):
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})

    return guard


def add_status_routes(
    api: FastAPI, sources: StatusSources, *, token: str | None, require_token: bool
) -> None:
    """Add ``/status`` and ``/status/data`` to ``api`` (the health API)."""
    guarded = [Depends(_status_guard(token))] if require_token and token else []

    @api.get("/status", include_in_schema=False, dependencies=guarded)
    def status_page() -> Response:
        return HTMLResponse(render_page(gather_status(sources)), headers=_headers())

    @api.get("/status/data", include_in_schema=False, dependencies=guarded)
    def status_data() -> Response:
        data = gather_status(sources)
        body = {
            "status": data["status"],
            "interval_s": data["interval_s"],
            "poll_ms": poll_ms(data["interval_s"]),
            "data": data,
            "sections": render_sections(data),
        }
        return JSONResponse(body, headers=_headers())
