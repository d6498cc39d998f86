"""``GET /health`` from the cached rendering: the same bytes as the route, renewed per snapshot."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.model import Status
from biomem.health.monitor import HealthMonitor
from biomem.health.server import build_health_server
from tests.integration.test_health_api import StaticCheck, standard_checks

pytestmark = pytest.mark.integration


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HEALTH_HTTP_PORT", str(port))
    opened = open_app(load_settings())
    try:
        yield opened
    finally:
        opened.close()


def test_cached_health_is_byte_for_byte_the_route_and_follows_each_snapshot(app: App) -> None:
    checks = standard_checks()
    monitor = HealthMonitor(checks, interval_s=7)
    asyncio.run(monitor.run_once())
    with build_health_server(app, monitor) as server, httpx.Client(base_url=server.url) as client:
        cached = client.get("/health")
        routed = client.get("/health", params={"via": "route"})  # a query: the framework
        assert cached.status_code == routed.status_code == 200
        assert cached.content == routed.content
        for header in ("content-type", "content-length", "cache-control"):
            assert cached.headers[header] == routed.headers[header]
        assert cached.headers["cache-control"] == "max-age=7"
        assert client.head("/health").content == b""
        assert client.head("/health").headers["content-length"] == cached.headers["content-length"]

        # A new snapshot with the required store down: the next request says so at once.
        duckdb = next(c for c in checks if c.name == "duckdb")
        assert isinstance(duckdb, StaticCheck)
        duckdb.status = Status.CRITICAL
        duckdb.output = "store file unreadable"
        asyncio.run(monitor.run_once())
        failing = client.get("/health")
        assert failing.status_code == 503
        assert failing.json()["status"] == "fail"
        assert failing.content == client.get("/health", params={"via": "route"}).content

        # Everything else still goes to the application.
        assert client.post("/health").status_code == 405
        assert client.get("/livez").status_code == 200
