"""Finding the running daemon's health API from a command, and asking it.

A running daemon holds the DuckDB file, so the commands that would open the
store (``biomem alerts``, ``biomem recovery``) first look for the daemon at
HEALTH_HTTP_HOST:HEALTH_HTTP_PORT: when its ``/livez`` answers, they ask it
over HTTP (with HEALTH_API_TOKEN when set); when nothing listens there, no
daemon runs and they open the store themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import typer

from biomem.cli_common import EXIT_FAILED, fail
from biomem.config import Settings

__all__ = ["Daemon", "find_daemon", "unexpected"]

_TIMEOUT_S = 5.0
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Daemon:
    """The running daemon's health API, or nobody (``base`` None)."""

    base: str | None
    token: str | None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        timeout_s: float = _TIMEOUT_S,
    ) -> httpx.Response:
        """One request to the daemon; a 401 ends the command (exit 1) saying what to set."""
        assert self.base is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(timeout=timeout_s) as client:
            response = client.request(
                method, self.base + path, json=body, params=params, headers=headers
            )
        if response.status_code == 401:
            raise fail("the daemon refused the request: set HEALTH_API_TOKEN", EXIT_FAILED)
        return response


def find_daemon(settings: Settings) -> Daemon:
    """The daemon when its API answers /livez, else ``Daemon(None, token)``."""
    # httpx logs each request at INFO: noise on a command's standard error.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    health = settings.health
    token = health.api_token.get_secret_value() if health.api_token is not None else None
    if not health.http_endpoints:
        return Daemon(None, token)
    # A wildcard bind is reached on loopback (this command runs on the same machine).
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - addresses to connect to
    host = wildcard.get(health.host, health.host)
    base = f"http://[{host}]:{health.port}" if ":" in host else f"http://{host}:{health.port}"
    try:
        with httpx.Client(timeout=_PROBE_TIMEOUT_S) as client:
            answer = client.get(base + "/livez")
    except httpx.HTTPError:
        return Daemon(None, token)  # nothing listens there: no daemon
    if answer.status_code != 200:
        raise fail(f"{base} answers, but not as biomem's health API", EXIT_FAILED)
    return Daemon(base, token)


def unexpected(response: httpx.Response) -> typer.Exit:
    """The exit for an answer the command did not expect: one line with its error."""
    try:
        error = response.json().get("error", "")
    except ValueError:
        error = response.text[:200]
    return fail(f"the daemon answered HTTP {response.status_code}: {error}", EXIT_FAILED)
