"""The health HTTP server: uvicorn on a background thread, and the token policy.

The socket is bound here, before uvicorn starts, so a port already in use
is one clear :class:`HealthServerError` at ``start()`` rather than a log
line and a ``sys.exit`` inside uvicorn's thread; it also lets port 0 pick a
free port (tests) and report it.

Beyond loopback the details, alerts and metrics need a bearer token
(:func:`requires_token`, :func:`check_token_policy`): they tell an attacker
which dependency is down and how the process is built. ``/health``,
``/livez`` and ``/readyz`` stay open for load balancers and orchestrators.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from biomem.alerts.routes import SilenceControl
from biomem.app import App
from biomem.config import Settings
from biomem.health.api import create_api, render_health
from biomem.health.fastpath import CachedHealth
from biomem.health.monitor import HealthMonitor
from biomem.health.status_data import ScheduleProvider
from biomem.metrics import AlertMetricsSource, build_registry
from biomem.resilience.errors import BiomemError, ConfigurationError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "HealthServer",
    "HealthServerError",
    "build_health_server",
    "check_token_policy",
    "requires_token",
]

logger = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16


class HealthServerError(BiomemError):
    """The health server could not start (or stop) as asked.

    Attributes:
        host: the address it was to listen on.
        port: the port it was to listen on.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"health server on {host}:{port}: {reason} (HEALTH_HTTP_HOST / HEALTH_HTTP_PORT)"
        )


def requires_token(host: str) -> bool:
    """True unless ``host`` is loopback only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return True  # a host name may resolve anywhere: assume it is reachable
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback


def check_token_policy(settings: Settings) -> str | None:
    """The token the API must require, or None when it need not require one.

    A token is required beyond loopback; a token that is configured is
    enforced on loopback too. Either way it must have at least 16 characters.

    Raises:
        ConfigurationError: a token is required and missing, or one is too short.
    """
    health = settings.health
    token = health.api_token.get_secret_value() if health.api_token is not None else None
    if not token:
        if requires_token(health.host):
            raise ConfigurationError(
                "HEALTH_API_TOKEN",
                f"a token of at least {MIN_TOKEN_LENGTH} characters",
                detail="required when HEALTH_HTTP_HOST is not loopback",
            )
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            "HEALTH_API_TOKEN",
            f"a token of at least {MIN_TOKEN_LENGTH} characters",
            detail=f"got {len(token)} characters",
        )
    return token


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port`` (as uvicorn would bind it)."""
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise HealthServerError(host, port, f"cannot resolve the host ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or type(exc).__name__
        raise HealthServerError(host, port, f"cannot listen: {reason.lower()}") from exc
    sock.set_inheritable(True)
    return sock


class HealthServer:
    """Serve ``api`` with uvicorn on a background thread.

    Args:
        api: the ASGI app (from :func:`~biomem.health.api.create_api`).
        host: the address to listen on.
        port: the port; 0 picks a free one (see :attr:`port` after ``start()``).
        start_timeout_s: how long ``start()`` waits for uvicorn to be serving.
        front: an ASGI layer in front of ``api`` that serves some requests
            itself (:class:`~biomem.health.fastpath.CachedHealth`).
    """

    def __init__(
        self,
        api: FastAPI,
        *,
        host: str,
        port: int,
        start_timeout_s: float = 10.0,
        front: ASGIApp | None = None,
    ) -> None:
        self.api = api
        self.front = front
        self.host = host
        self._port = port
        self.start_timeout_s = start_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when constructed with 0 and started)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind, start uvicorn and wait until it serves.

        Raises:
            HealthServerError: the port is taken, the host cannot be bound, or
                uvicorn did not start in time.
        """
        if self._thread is not None:
            return
        sock = _bind(self.host, self._port)
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.front if self.front is not None else self.api,
            host=self.host,
            port=self._port,
            log_config=None,  # biomem configures logging; uvicorn must not replace it
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        self._server = server

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # surfaced by start(), and logged
                self._failure = exc
                logger.exception("health server stopped with an error")

        self._thread = threading.Thread(target=serve, name="health-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._failure
                self.stop()
                what = f"{type(failure).__name__}" if failure is not None else "timed out"
                raise HealthServerError(self.host, self._port, f"did not start ({what})")
            time.sleep(0.01)
        logger.info("health server listening on %s", self.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to finish its requests and exit; wait at most ``timeout_s``."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive() and server is not None:
                server.force_exit = True  # requests still running past the wait: cut them
                thread.join(1.0)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AlertingSurface(AlertMetricsSource, SilenceControl, Protocol):
    """The alert service as the server uses it: metrics and silences."""


class RecoverySource(Protocol):
    """The daemon's recovery as the health server reads it (recent actions, counts)."""

    def snapshot(self) -> Mapping[str, Any]: ...

    def counts(self) -> Mapping[tuple[str, str, str], int]: ...


def build_health_server(
    app: App,
    monitor: HealthMonitor,
    *,
    alerts: Callable[[], Mapping[str, Any]] | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
    recovery: RecoverySource | None = None,
    alerting: AlertingSurface | None = None,
    schedule: ScheduleProvider | None = None,
) -> HealthServer:
    """The server the settings ask for: token policy checked, registry and API built.

    ``alerting`` (the daemon's alert service) adds the alert metrics and the
    silence routes; ``schedule`` (the orchestrator's
    :meth:`~biomem.orchestrator.Orchestrator.next_run_times`) the status page's next runs.

    Raises:
        ConfigurationError: the token policy is not met.
    """
    settings = app.settings.health
    token = check_token_policy(app.settings)
    api = create_api(
        monitor=monitor,
        app=app,
        registry=build_registry(
            app,
            monitor,
            alerts=alerting,
            recovery_counts=recovery.counts if recovery is not None else None,
        ),
        alerts=alerts,
        shutting_down=shutting_down,
        token=token,
        require_token=token is not None,
        recovery=recovery.snapshot if recovery is not None else None,
        silences=alerting,
        schedule=schedule,
    )
    front = CachedHealth(
        api,
        monitor.snapshot,
        render_health,
        max_age=monitor.max_age_s,
        refresh=monitor.fresh_snapshot_async if monitor.on_demand else None,
    )
    return HealthServer(api, host=settings.host, port=settings.port, front=front)
