"""The health HTTP API through real HTTP: status codes, shapes, auth, secrets, OpenAPI, uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.api import HEALTH_MEDIA_TYPE, create_api
from biomem.health.model import Check, ComponentHealth, Measurement, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.server import (
    HealthServer,
    HealthServerError,
    build_health_server,
    check_token_policy,
    requires_token,
)
from biomem.metrics import build_registry
from biomem.resilience.errors import ConfigurationError
from biomem.store.runs import record_run
from tests.fakes.proxy import FaultProxy

pytestmark = pytest.mark.integration

TOKEN = "health-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "Planted-Secret-42"
PLANTED_URL = f"postgresql://app:{SECRET}@127.0.0.1:1/x"


class StaticCheck(Check):
    """A real check that reports whatever status and measurements the test gives it."""

    def __init__(
        self,
        name: str,
        status: Status = Status.HEALTHY,
        *,
        required: bool = False,
        component_type: str = "component",
        measurements: Sequence[Measurement] = (),
        output: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.status = status
        self.required = required
        self.component_type = component_type
        self.measurements = tuple(measurements)
        self.output = output
        self.details = dict(details or {})

    async def run(self) -> ComponentHealth:
        return ComponentHealth(
            name=self.name,
            component_type=self.component_type,
            status=self.status,
            required=self.required,
            checked_at=datetime.now(UTC),
            duration_ms=1.5,
            output=self.output,
            measurements=self.measurements,
            details=self.details,
        )


class HangingCheck(Check):
    """A check whose dependency never answers: run() awaits an event that never fires."""

    def __init__(self, name: str, *, timeout_s: float) -> None:
        self.name = name
        self.required = True
        self.timeout_s = timeout_s
        self.started = threading.Event()

    async def run(self) -> ComponentHealth:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def standard_checks(
    postgres: Status = Status.HEALTHY, duckdb: Status = Status.HEALTHY
) -> list[Check]:
    """The five components, shaped like the real checks."""
    return [
        StaticCheck(
            "postgresql",
            postgres,
            component_type="datastore",
            measurements=[Measurement(name="responseTime", value=3.2, unit="ms", status=postgres)],
            output=None if postgres is Status.HEALTHY else "connection refused",
        ),
        StaticCheck(
            "duckdb",
            duckdb,
            required=True,
            component_type="datastore",
            measurements=[Measurement(name="responseTime", value=0.4, unit="ms", status=duckdb)],
            output=None if duckdb is Status.HEALTHY else "store file unreadable",
        ),
        StaticCheck("ollama", Status.DEGRADED, output="fallback mode"),
        StaticCheck(
            "system_resources",
            required=True,
            component_type="system",
            measurements=[
                Measurement(name="memoryUtilization", value=41.0, unit="percent"),
                Measurement(name="diskUtilization", value=12.5, unit="percent"),
            ],
        ),
        StaticCheck("pipeline", details={"stages": 7}),
    ]


@dataclass
class Harness:
    app: App
    monitor: HealthMonitor
    registry: CollectorRegistry
    api: FastAPI


@pytest.fixture
def app() -> Iterator[App]:
    opened = open_app(load_settings())
    try:
        yield opened
    finally:
        opened.close()


def harness(
    app: App,
    checks: Sequence[Check],
    *,
    run: bool = True,
    interval_s: float = 15.0,
    **options: Any,
) -> Harness:
    monitor = HealthMonitor(checks, interval_s=interval_s)
    if run:
        asyncio.run(monitor.run_once())
    registry = build_registry(app, monitor, process_metrics=False)
    api = create_api(monitor=monitor, app=app, registry=registry, **options)
    return Harness(app, monitor, registry, api)


# --------------------------------------------------------------------------- /health


@pytest.mark.parametrize(
    ("postgres", "duckdb", "wire", "code"),
    [
        pytest.param(Status.HEALTHY, Status.HEALTHY, "warn", 200, id="ollama-fallback-warn-200"),
        pytest.param(Status.UNHEALTHY, Status.HEALTHY, "warn", 200, id="optional-down-warn-200"),
        pytest.param(Status.HEALTHY, Status.CRITICAL, "fail", 503, id="required-down-fail-503"),
    ],
)
def test_health_status_maps_to_http_code_and_health_json(
    app: App, postgres: Status, duckdb: Status, wire: str, code: int
) -> None:
    """/health answers application/health+json with pass/warn → 200 and fail → 503."""
    h = harness(app, standard_checks(postgres, duckdb), interval_s=30.7)
    with TestClient(h.api) as client:
        response = client.get("/health")
    assert response.status_code == code
    assert response.headers["content-type"] == HEALTH_MEDIA_TYPE
    assert response.headers["cache-control"] == "max-age=30"
    body = response.json()
    assert body["status"] == wire
    assert body["version"] == "1"
    assert body["serviceId"] == "biomem"
    assert body["releaseId"]
    assert "output" in body  # warn and fail say why
    checks = body["checks"]
    assert {
        "postgresql:responseTime",
        "duckdb:responseTime",
        "ollama:status",
        "system:memoryUtilization",
        "system:diskUtilization",
        "pipeline:status",
    } <= set(checks)
    memory = checks["system:memoryUtilization"][0]
    assert memory["componentId"] == "system_resources"
    assert memory["componentType"] == "system"
    assert memory["observedValue"] == 41.0
    assert memory["observedUnit"] == "percent"
    assert memory["status"] == "pass"
    assert "output" not in memory  # only when not pass
    datetime.fromisoformat(memory["time"])
    assert checks["ollama:status"][0]["status"] == "warn"
    assert checks["ollama:status"][0]["output"] == "fallback mode"
    pg = checks["postgresql:responseTime"][0]
    assert pg["status"] == postgres.wire
    assert ("output" in pg) == (postgres is not Status.HEALTHY)


def test_health_all_pass_is_200_without_output(app: App) -> None:
    """Every component healthy: pass, 200, no output anywhere."""
    h = harness(app, [StaticCheck("duckdb", required=True), StaticCheck("pipeline")])
    with TestClient(h.api) as client:
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pass"
    assert "output" not in body
    assert all("output" not in e for entries in body["checks"].values() for e in entries)


def test_health_answers_from_the_snapshot_while_a_check_hangs(app: App) -> None:
    """A hanging dependency never slows /health: it answers from the last snapshot in < 1 s."""
    hanging = HangingCheck("duckdb", timeout_s=2.0)
    h = harness(app, [hanging, StaticCheck("pipeline")], run=False)
    runner = threading.Thread(target=lambda: asyncio.run(h.monitor.run_once()), daemon=True)
    runner.start()
    assert hanging.started.wait(5)
    with TestClient(h.api) as client:
        started = time.perf_counter()
        response = client.get("/health")
        elapsed = time.perf_counter() - started
        assert runner.is_alive()  # the check was still hanging while /health answered
        assert response.status_code == 200
        assert elapsed < 1.0
        assert response.json()["checks"]["duckdb:status"][0]["output"] == "not checked yet"
        runner.join(10)
        after = client.get("/health")
    assert after.status_code == 503  # a required component timed out
    assert "timed out" in after.json()["checks"]["duckdb:status"][0]["output"]


# --------------------------------------------------------------------------- errors


def test_errors_are_json(app: App) -> None:
    """Unknown service 404, unknown path 404, wrong method 405, bad query 422: all JSON."""
    h = harness(app, standard_checks())
    with TestClient(h.api) as client:
        unknown = client.get("/health/mysql")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": "unknown service",
            "known": ["duckdb", "ollama", "pipeline", "postgresql", "system_resources"],
        }
        missing = client.get("/no/such/path")
        assert missing.status_code == 404
        assert missing.json() == {"error": "not found"}
        trailing = client.get("/health/")
        assert trailing.status_code == 404
        posted = client.post("/health")
        assert posted.status_code == 405
        assert posted.json() == {"error": "method not allowed"}
        assert posted.headers["allow"] == "GET"
        invalid = client.get("/health/detailed", params={"history": "-3"})
        assert invalid.status_code == 422
        assert invalid.json()["error"] == "invalid request"
        assert "-3" not in invalid.text  # the input is never echoed


def test_unexpected_exception_is_503_with_an_id_and_logged(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug behind an endpoint answers 503 {"error", "id"} (never 500, never its text) and logs."""

    def broken_alerts() -> dict[str, Any]:
        raise RuntimeError(f"alert store exploded with {SECRET}")

    h = harness(app, standard_checks(), alerts=broken_alerts)
    with TestClient(h.api) as client:
        response = client.get("/health/alerts")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"error", "id"}
    assert body["error"] == "internal error"
    uuid.UUID(body["id"])
    assert SECRET not in response.text
    assert body["id"] in caplog.text


# --------------------------------------------------------------------------- endpoints


def test_detailed_reports_components_breakers_budgets_dlq_errors_and_runs(app: App) -> None:
    """/health/detailed gathers everything a person needs to see why, in one document."""
    h = harness(app, standard_checks(postgres=Status.UNHEALTHY))
    asyncio.run(h.monitor.run_once())  # two points of history
    app.guards.ollama.breaker.transition_to_forced_open()
    app.guards.errors.record(
        ConnectionRefusedError("refused"), component="postgresql", operation="connect"
    )
    app.dlq.put(
        "writeback.dream",
        {"dream": 1},
        ConnectionRefusedError("refused"),
        idempotency_key="dream-1",
        component="postgresql",
    )
    with record_run(app.store, "short_term") as run:
        run.counts = {"items": 2, "llm": 0, "fallback": 2}
    with TestClient(h.api) as client:
        response = client.get("/health/detailed", params={"history": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "warn"
    pg = body["components"]["postgresql"]
    assert pg["status"] == "unhealthy"
    assert pg["wire"] == "fail"
    assert pg["output"] == "connection refused"
    assert pg["measurements"][0]["name"] == "responseTime"
    assert len(pg["history"]) == 1
    assert body["components"]["pipeline"]["details"] == {"stages": 7}
    breakers = {b["name"]: b for b in body["breakers"]}
    assert breakers["ollama"]["state"] == "forced_open"
    assert breakers["duckdb"]["calls"] > 0  # the store's own calls go through its breaker
    assert set(body["retry_budgets"]) == {"postgresql", "duckdb", "ollama"}
    assert body["dead_letters"]["counts"]["pending"] == 1
    assert body["dead_letters"]["oldest_pending"] is not None
    assert body["errors"]["recent"][0]["component"] == "postgresql"
    assert body["errors"]["counts"] == [
        {"component": "postgresql", "kind": "connection_failure", "count": 1}
    ]
    assert body["runs"]["error"] is None
    assert body["runs"]["last"][0]["stage"] == "short_term"
    assert body["runs"]["last"][0]["counts"] == {"items": 2, "llm": 0, "fallback": 2}


def test_detailed_reports_a_store_failure_instead_of_failing(app: App) -> None:
    """With the store closed, /health/detailed answers 200 saying what failed; /readyz is 503."""
    h = harness(app, standard_checks())
    app.store.close()
    with TestClient(h.api) as client:
        detailed = client.get("/health/detailed")
        ready = client.get("/readyz")
    assert detailed.status_code == 200
    body = detailed.json()
    assert body["runs"]["error"]
    assert body["dead_letters"]["error"]
    assert ready.status_code == 503
    assert ready.json() == {"status": "fail", "output": "store closed"}


def test_detailed_shows_runs_while_postgresql_is_partitioned(
    pg_clean_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters read from a PostgreSQL that does not answer time out, again and again,
    while the runs (DuckDB) are still shown: the slow reads never take the store's slots."""
    parts = urlsplit(pg_clean_url)
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as proxy:
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        monkeypatch.setenv("POSTGRES_DB_URL", urlunsplit(parts._replace(netloc=netloc)))
        partitioned = open_app(load_settings())
        try:
            with record_run(partitioned.store, "working_memory"):
                pass
            h = harness(partitioned, standard_checks())
            proxy.blackhole()
            with TestClient(h.api) as client:
                bodies = [client.get("/health/detailed").json() for _ in range(3)]
            proxy.heal()
        finally:
            partitioned.close()
    assert all(body["dead_letters"]["error"] for body in bodies), bodies
    assert all(body["runs"]["error"] is None for body in bodies), bodies
    assert all(body["runs"]["last"][0]["stage"] == "working_memory" for body in bodies)


def test_service_endpoint_and_probes(app: App) -> None:
    """/health/{service} gives one component; /livez always passes; /readyz follows shutdown."""
    stopping = threading.Event()
    h = harness(
        app,
        standard_checks(duckdb=Status.CRITICAL),
        shutting_down=stopping.is_set,
    )
    with TestClient(h.api) as client:
        system = client.get("/health/system_resources")
        assert system.status_code == 200
        assert system.json()["name"] == "system_resources"
        assert system.json()["breaker"] is None
        duck = client.get("/health/duckdb")
        assert duck.status_code == 503
        assert duck.json()["status"] == "critical"
        assert duck.json()["breaker"]["name"] == "duckdb"
        assert client.get("/livez").json() == {"status": "pass"}
        assert client.get("/readyz").status_code == 200
        stopping.set()
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["output"] == "shutting down"
        assert client.get("/livez").status_code == 200


def test_alerts_shape_with_and_without_a_source(app: App) -> None:
    """/health/alerts has the fixed shape, empty by default, filled from the alerts source."""
    plain = harness(app, standard_checks())
    with TestClient(plain.api) as client:
        assert client.get("/health/alerts").json() == {
            "active": [],
            "recent": [],
            "undelivered": 0,
        }
    alert = {"component": "postgresql", "severity": "warning"}
    fed = harness(
        app,
        standard_checks(),
        alerts=lambda: {"active": [alert], "recent": [alert], "undelivered": 2},
    )
    with TestClient(fed.api) as client:
        assert client.get("/health/alerts").json() == {
            "active": [alert],
            "recent": [alert],
            "undelivered": 2,
        }


# --------------------------------------------------------------------------- security


PROTECTED = ["/health/detailed", "/health/alerts", "/health/duckdb", "/metrics"]
OPEN = ["/health", "/livez", "/readyz"]


def test_token_required_beyond_loopback(app: App) -> None:
    """With require_token, details, alerts, services and metrics need the token; probes do not."""
    h = harness(app, standard_checks(), token=TOKEN, require_token=True)
    with TestClient(h.api) as client:
        for path in PROTECTED:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-0123456789"},
                {"Authorization": f"Basic {TOKEN}"},
            ):
                refused = client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.json() == {"error": "unauthorized"}
                assert refused.headers["www-authenticate"] == "Bearer"
            assert client.get(path, headers=AUTH).status_code in (200, 503), path
        for path in OPEN:
            assert client.get(path).status_code == 200, path


def test_no_token_needed_on_loopback(app: App) -> None:
    """Without require_token every endpoint answers without credentials."""
    h = harness(app, standard_checks())
    with TestClient(h.api) as client:
        for path in PROTECTED + OPEN:
            assert client.get(path).status_code == 200, path


def test_require_token_without_a_token_is_refused(app: App) -> None:
    """The factory refuses to build an API that should need a token but has none."""
    with pytest.raises(ValueError, match="token"):
        harness(app, standard_checks(), require_token=True)


@pytest.mark.parametrize(
    ("host", "needed"),
    [
        pytest.param("127.0.0.1", False, id="ipv4-loopback"),
        pytest.param("127.8.9.10", False, id="loopback-range"),
        pytest.param("::1", False, id="ipv6-loopback"),
        pytest.param("[::1]", False, id="ipv6-bracketed"),
        pytest.param("localhost", False, id="localhost"),
        pytest.param("LOCALHOST", False, id="localhost-upper"),
        pytest.param("0.0.0.0", True, id="all-ipv4"),
        pytest.param("::", True, id="all-ipv6"),
        pytest.param("192.168.1.5", True, id="private"),
        pytest.param("health.example.org", True, id="hostname"),
    ],
)
def test_requires_token_unless_loopback(host: str, needed: bool) -> None:
    """A token is required unless the API listens on loopback only."""
    assert requires_token(host) is needed


def test_token_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond loopback a missing token is a configuration error naming HEALTH_API_TOKEN."""

    def policy(host: str, token: str | None) -> str | None:
        monkeypatch.setenv("HEALTH_HTTP_HOST", host)
        if token is None:
            monkeypatch.delenv("HEALTH_API_TOKEN", raising=False)
        else:
            monkeypatch.setenv("HEALTH_API_TOKEN", token)
        return check_token_policy(load_settings())

    assert policy("127.0.0.1", None) is None
    assert policy("0.0.0.0", TOKEN) == TOKEN
    assert policy("127.0.0.1", TOKEN) == TOKEN  # a configured token is enforced everywhere
    with pytest.raises(ConfigurationError) as missing:
        policy("0.0.0.0", None)
    assert missing.value.variable == "HEALTH_API_TOKEN"
    assert "not loopback" in str(missing.value)
    with pytest.raises(ConfigurationError, match="at least 16"):
        policy("0.0.0.0", "short")


def test_no_secret_in_any_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted password (in the settings, an error event, a check's output) appears in no body."""
    monkeypatch.setenv("POSTGRES_DB_URL", PLANTED_URL)
    planted = open_app(load_settings())
    try:
        planted.guards.errors.record(
            ConnectionRefusedError(f"cannot reach {PLANTED_URL} password={SECRET}"),
            component="postgresql",
            operation="connect",
            context={"dsn": PLANTED_URL, "note": f"token={SECRET}"},
        )
        checks: list[Check] = [
            StaticCheck(
                "postgresql",
                Status.UNHEALTHY,
                component_type="datastore",
                output=f"connect to {PLANTED_URL} failed",
                measurements=[
                    Measurement(
                        name="responseTime",
                        value=None,
                        unit="ms",
                        status=Status.UNHEALTHY,
                        output=f"{PLANTED_URL} refused",
                    )
                ],
                details={"url": PLANTED_URL, "password": SECRET, "last_error": f"pwd={SECRET}"},
            ),
            StaticCheck("duckdb", required=True),
        ]
        h = harness(
            planted,
            checks,
            token=TOKEN,
            require_token=True,
            alerts=lambda: {"active": [{"message": f"down: {PLANTED_URL}"}]},
        )
        with TestClient(h.api) as client:
            paths = [*OPEN, *PROTECTED, "/health/postgresql", "/openapi.json"]
            for path in paths:
                response = client.get(path, headers=AUTH)
                assert response.status_code in (200, 503), path
                assert SECRET not in response.text, path
                assert TOKEN not in response.text, path
    finally:
        planted.close()


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_declares_every_endpoint_and_the_health_media_type(app: App) -> None:
    """/openapi.json lists every endpoint, /health as health+json, and the bearer scheme."""
    h = harness(app, standard_checks(), token=TOKEN, require_token=True)
    with TestClient(h.api) as client:
        spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/health",
        "/health/detailed",
        "/health/alerts",
        "/health/{service}",
        "/livez",
        "/readyz",
        "/metrics",
    }
    health = spec["paths"]["/health"]["get"]["responses"]
    assert HEALTH_MEDIA_TYPE in health["200"]["content"]
    assert HEALTH_MEDIA_TYPE in health["503"]["content"]
    assert "401" in spec["paths"]["/metrics"]["get"]["responses"]
    assert "401" not in health
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_api_conforms_to_its_openapi(app: App) -> None:
    """Generated requests, valid and invalid, never get a 5xx and every body matches its schema.

    One Hypothesis run per operation rather than ``schemathesis.pytest.from_fixture``:
    its lazy loader reads ``Node._nodeid``, which pytest 9.2 no longer has.
    """
    h = harness(app, standard_checks(), token=TOKEN, require_token=True)
    app.guards.errors.record(TimeoutError("slow"), component="ollama", operation="chat")
    with record_run(app.store, "consolidation") as run:
        run.counts = {"items": 1}
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", h.api)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 7
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not operation.query:
                continue  # nothing to make invalid: no parameters

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def conforms(case: Any) -> None:
                case.call_and_validate(
                    headers=AUTH, checks=[not_a_server_error, response_schema_conformance]
                )

            conforms()
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------- uvicorn


def test_real_uvicorn_server_serves_and_stops(app: App) -> None:
    """The HealthServer serves the API over a real loopback socket and frees it on stop."""
    h = harness(app, standard_checks(), token=TOKEN, require_token=True)
    server = HealthServer(h.api, host="127.0.0.1", port=0)
    server.start()
    try:
        assert server.port > 0
        with httpx.Client(base_url=server.url, timeout=5) as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert health.headers["content-type"] == HEALTH_MEDIA_TYPE
            assert client.get("/metrics").status_code == 401
            metrics = client.get("/metrics", headers=AUTH)
            assert metrics.status_code == 200
            assert "biomem_health_status" in metrics.text
    finally:
        server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0  # nobody listens any more


def test_port_in_use_is_one_clear_error(app: App) -> None:
    """Starting on a port another socket holds raises HealthServerError naming host and port."""
    h = harness(app, standard_checks())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = HealthServer(h.api, host="127.0.0.1", port=port)
        with pytest.raises(HealthServerError) as caught:
            server.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "in use" in message
    assert "\n" not in message
    assert not server.running


def test_build_health_server_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built from the settings: refused beyond loopback without a token, open on loopback."""
    with socket.socket() as probe:  # a port free a moment ago: nothing else here binds it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HEALTH_HTTP_HOST", "0.0.0.0")
    exposed = open_app(load_settings())
    try:
        with pytest.raises(ConfigurationError, match="HEALTH_API_TOKEN"):
            build_health_server(exposed, HealthMonitor(standard_checks()))
    finally:
        exposed.close()
    monkeypatch.setenv("HEALTH_HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HEALTH_HTTP_PORT", str(port))
    local = open_app(load_settings())
    try:
        with build_health_server(local, HealthMonitor(standard_checks())) as server:
            assert server.url == f"http://127.0.0.1:{port}"
            detailed = httpx.get(f"{server.url}/health/detailed", timeout=5)
            assert detailed.status_code == 200
    finally:
        local.close()
