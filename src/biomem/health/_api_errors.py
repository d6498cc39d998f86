"""The health API's errors: JSON for each failure, 503 with an id, the token guard."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from http import HTTPStatus

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from biomem.health._api_bodies import _error

logger = logging.getLogger("biomem.health.api")

# --------------------------------------------------------------------------- errors


class _CatchAll:
    """Any exception that escapes a route becomes 503 JSON with an id; the text is logged.

    Starlette's own last-resort handler answers 500 and re-raises, so this
    pure ASGI middleware sits inside it and never lets an exception out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            error_id = str(uuid.uuid4())
            logger.exception("health api request failed (id %s)", error_id)
            if not started:  # once headers are out, all we can do is end the response
                response = _error(503, "internal error", id=error_id)
                await response(scope, receive, send)


def _install_error_handlers(api: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        words = {401: "unauthorized", 404: "not found", 405: "method not allowed"}
        try:
            default = HTTPStatus(exc.status_code).phrase.lower()
        except ValueError:
            default = "error"
        response = _error(exc.status_code, words.get(exc.status_code, default))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Only where and why: the offending input is never echoed back.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return _error(422, "invalid request", detail=detail)

    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_middleware(_CatchAll)


def _token_guard(token: str) -> Callable[..., None]:
    expected = token.encode()
    bearer = HTTPBearer(
        auto_error=False,
        description="HEALTH_API_TOKEN; required when the API listens beyond loopback.",
    )

    def guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        given = credentials.credentials.encode() if credentials is not None else b""
        if not (given and hmac.compare_digest(given, expected)):
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})

    return guard
