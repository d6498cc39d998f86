"""The daemon's recovery routes over a real RecoveryService and store: running a rule, the
history, the rules with their state; token, bad input, busy answers; /openapi.json and a
schemathesis run over it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from biomem.app import App
from biomem.bounded import BoundedReader
from biomem.health.api import create_api
from biomem.health.monitor import HealthMonitor
from biomem.metrics import build_registry
from biomem.recovery import PersistedState, RecoveryAudit, RecoveryBusyError, RecoveryService
from biomem.recovery.routes import add_recovery_routes
from tests.support.recovery import make_app

pytestmark = pytest.mark.integration

TOKEN = "recovery-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUN = "/recovery/rules/{}/run"

# A rule whose action is real and harmless: gc in this process.
CONFIG = """\
[[recovery.rules]]
name = "tidy"
component = "system_resources"
actions = ["collect_garbage"]
cooldown_seconds = 60
"""


@dataclass
class Rig:
    app: App
    service: RecoveryService
    api: FastAPI


def _api(app: App, control: Any, reader: BoundedReader | None = None) -> FastAPI:
    monitor = HealthMonitor([])
    api = create_api(
        monitor=monitor,
        app=app,
        registry=build_registry(app, monitor, process_metrics=False),
        token=TOKEN,
        require_token=True,
    )
    add_recovery_routes(api, control, app.settings, reader=reader)
    return api


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    config = tmp_path / "biomem.toml"
    config.write_text(CONFIG, encoding="utf-8")
    app = make_app(monkeypatch, BIOMEM_CONFIG_FILE=str(config), HEALTH_API_TOKEN=TOKEN)
    service = RecoveryService(app, HealthMonitor([]), None)
    try:
        yield Rig(app, service, _api(app, service))
    finally:
        service.stop()
        app.close()


def test_a_rule_run_over_http_is_audited_and_listed(rig: Rig) -> None:
    """POST runs the rule in the service (200); /recovery/history and the store both tell it."""
    with TestClient(rig.api) as client:
        dry = client.post(RUN.format("tidy"), json={"dry_run": True}, headers=AUTH)
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True
        assert [(d["action"], d["outcome"], d["reason"]) for d in dry.json()["decisions"]] == [
            ("collect_garbage", "skipped", "dry_run")
        ]
        done = client.post(RUN.format("tidy"), json={}, headers=AUTH)
        assert done.status_code == 200, done.text
        (decision,) = done.json()["decisions"]
        assert (decision["outcome"], decision["phase"]) == ("done", "manual")
        assert decision["detail"]["rss_before"] > 0
        history = client.get("/recovery/history", params={"rule": "tidy"}, headers=AUTH)
        assert history.status_code == 200
        rows = history.json()["decisions"]
        assert [(r["id"], r["outcome"]) for r in rows] == [
            (decision["id"], "done"),
            (rows[1]["id"], "skipped"),
        ]
        assert client.get("/recovery/history", params={"limit": 1}, headers=AUTH).json()[
            "decisions"
        ] == [rows[0]]
        listed = client.get("/recovery/rules", headers=AUTH).json()
    assert rig.service.audit.history(rule="tidy") == rows
    assert (listed["enabled"], listed["dry_run"]) == (True, False)
    names = [r["name"] for r in listed["rules"]]
    assert names[0] == "postgres_pool_reset" and names[-1] == "tidy"
    assert listed["rules"][-1]["actions"] == ["collect_garbage"]
    assert listed["rules"][-1]["state"] is None  # a manual run counts no attempt


def test_the_rules_show_the_state_the_engine_holds(rig: Rig) -> None:
    """A saved attempt, cooldown and incident show in /recovery/rules (epoch seconds)."""
    audit = RecoveryAudit(rig.app.store)
    audit.save_state(
        "tidy",
        PersistedState(
            attempts=(1000.0,), cooldown_until=4102444800.0, incident_id="abc", acted=True
        ),
    )
    assert audit.flush()
    service = RecoveryService(rig.app, HealthMonitor([]), None)  # reads the saved state
    with TestClient(_api(rig.app, service)) as client:
        rules = client.get("/recovery/rules", headers=AUTH).json()["rules"]
    (tidy,) = [r for r in rules if r["name"] == "tidy"]
    assert tidy["state"]["incident_id"] == "abc"
    assert tidy["state"]["cooldown_until"] == pytest.approx(4102444800.0, abs=1)
    assert tidy["state"]["attempts"] == [pytest.approx(1000.0, abs=1)]


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [
        pytest.param(RUN.format("reboot_the_world"), {"json": {}}, 404, id="unknown-rule"),
        pytest.param(RUN.format("tidy"), {}, 422, id="no-body"),
        pytest.param(
            RUN.format("tidy"),
            {"content": "dry_run=false", "headers": {"Content-Type": "text/plain"}},
            422,
            id="form-post-not-json",
        ),
        pytest.param(RUN.format("tidy"), {"json": {"dry_run": "maybe"}}, 422, id="bad-flag"),
        pytest.param(RUN.format("tidy"), {"json": {"force": True}}, 422, id="unknown-field"),
    ],
)
def test_bad_runs_are_refused_with_json_and_nothing_runs(
    rig: Rig, path: str, kwargs: dict[str, Any], status: int
) -> None:
    """Unknown rule 404 (naming the known ones); a missing, non-JSON or wrong body 422."""
    headers = {**AUTH, **kwargs.pop("headers", {})}
    with TestClient(rig.api) as client:
        response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]
    if status == 404:
        assert "no recovery rule 'reboot_the_world'" in body["error"]
        assert "tidy" in body["known"]
    assert rig.service.audit.history() == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param("GET", "/recovery/rules", {}, id="rules"),
        pytest.param("GET", "/recovery/history", {}, id="history"),
        pytest.param("POST", RUN.format("tidy"), {"json": {}}, id="run"),
    ],
)
def test_every_route_needs_the_token(
    rig: Rig, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    """Without the bearer token, or with a wrong one: 401, and nothing runs."""
    with TestClient(rig.api) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            response = client.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized"}
    assert rig.service.audit.history() == []


def test_a_busy_store_is_a_503_with_retry_after(rig: Rig) -> None:
    """While a stage holds the store, the history answers 503 at once instead of waiting."""
    api = _api(rig.app, rig.service, reader=BoundedReader(timeout_s=0.2))
    holding, release = threading.Event(), threading.Event()

    def long_stage() -> None:
        with rig.app.store.transaction():
            holding.set()
            release.wait(30)

    stage = threading.Thread(target=long_stage)
    stage.start()
    try:
        assert holding.wait(10)
        with TestClient(api) as client:
            response = client.get("/recovery/history", headers=AUTH)
    finally:
        release.set()
        stage.join(30)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "the store is busy" in response.json()["error"]


class _BusyEngine:
    """The recovery control of a daemon whose engine is in the middle of an evaluation."""

    def rules(self, *, wait_s: float) -> dict[str, Any]:
        raise RecoveryBusyError(wait_s)

    def history(self, *, limit: int, rule: str | None) -> list[dict[str, Any]]:
        return []

    def run_rule(self, name: str, *, dry_run: bool, wait_s: float) -> dict[str, Any]:
        raise RecoveryBusyError(wait_s)


def test_a_busy_engine_is_a_503_with_retry_after(rig: Rig) -> None:
    """A run, or the rules' state, that cannot get the engine in time: 503 with Retry-After."""
    with TestClient(_api(rig.app, _BusyEngine())) as client:
        for response in (
            client.post(RUN.format("tidy"), json={}, headers=AUTH),
            client.get("/recovery/rules", headers=AUTH),
        ):
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert "recovery is busy with an evaluation" in response.json()["error"]


def test_openapi_describes_the_recovery_routes(rig: Rig) -> None:
    """/openapi.json has the three operations, their bodies and their answers."""
    with TestClient(rig.api) as client:
        spec = client.get("/openapi.json").json()
    run = spec["paths"]["/recovery/rules/{name}/run"]["post"]
    assert {"200", "401", "404", "422", "503"} <= set(run["responses"])
    assert run["requestBody"]["required"] is True
    history = spec["paths"]["/recovery/history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"rule", "limit"}
    assert {"200", "401", "422", "503"} <= set(history["responses"])
    assert {"200", "401"} <= set(spec["paths"]["/recovery/rules"]["get"]["responses"])


def test_recovery_routes_conform_to_their_openapi(rig: Rig) -> None:
    """Generated requests, valid and invalid, never get a 5xx and every body fits its schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", rig.api)
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith("/recovery/")
    ]
    assert len(operations) == 3
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            inputs = operation.query or operation.body or operation.path_parameters
            if mode is GenerationMode.NEGATIVE and not inputs:
                continue  # nothing to make invalid: GET /recovery/rules takes no input

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def conforms(case: Any) -> None:
                case.call_and_validate(
                    headers=AUTH, checks=[not_a_server_error, response_schema_conformance]
                )

            conforms()
    assert time.monotonic() - started < 120
