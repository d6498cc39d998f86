"""The silence endpoints and /health/alerts of a real AlertService: shapes, auth, bad input,
redaction, and a schemathesis run over their OpenAPI description."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from biomem.alerting import AlertService
from biomem.app import App, open_app
from biomem.config import load_settings
from biomem.health.api import create_api
from biomem.health.monitor import HealthMonitor
from biomem.metrics import build_registry
from tests.support.alert_rig import DOWN

pytestmark = pytest.mark.integration

TOKEN = "alerts-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLANTED = "hunter2-planted"
SILENCES = "/health/alerts/silences"


@dataclass
class Rig:
    app: App
    service: AlertService
    api: FastAPI


@pytest.fixture
def rig() -> Iterator[Rig]:
    app = open_app(load_settings())
    try:
        monitor = HealthMonitor([])
        service = AlertService(app, monitor)
        api = create_api(
            monitor=monitor,
            app=app,
            registry=build_registry(app, monitor, process_metrics=False, alerts=service),
            alerts=service.snapshot,
            silences=service,
            token=TOKEN,
            require_token=True,
        )
        yield Rig(app, service, api)
        service.stop()
    finally:
        app.close()


def test_silence_added_listed_and_ended(rig: Rig) -> None:
    """POST makes a silence (201) that /health/alerts lists; DELETE ends it (200, then 404)."""
    with TestClient(rig.api) as client:
        made = client.post(
            SILENCES,
            json={
                "matchers": {"component": "duckdb", "alertname": "=~Component.*"},
                "duration": "2h",
                "comment": "moving the disk",
                "created_by": "alice",
            },
            headers=AUTH,
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["matchers"] == {"component": "duckdb", "alertname": "=~Component.*"}
        assert (silence["createdBy"], silence["comment"], silence["status"]) == (
            "alice",
            "moving the disk",
            "active",
        )
        ends = datetime.fromisoformat(silence["endsAt"])
        assert timedelta(minutes=119) < ends - datetime.now(UTC) <= timedelta(hours=2)
        listed = client.get("/health/alerts", headers=AUTH).json()
        assert [s["id"] for s in listed["silences"]] == [silence["id"]]
        ended = client.delete(f"{SILENCES}/{silence['id']}", headers=AUTH)
        assert ended.status_code == 200
        assert ended.json()["status"] == "expired"
        assert client.get("/health/alerts", headers=AUTH).json()["silences"] == []
        again = client.delete(f"{SILENCES}/{silence['id']}", headers=AUTH)
        assert (again.status_code, again.json()) == (
            404,
            {"error": "no active silence with this id"},
        )
        assert client.delete(f"{SILENCES}/{uuid.uuid4()}", headers=AUTH).status_code == 404
        assert client.delete(f"{SILENCES}/not-an-id", headers=AUTH).status_code == 404


def test_a_silence_made_over_http_mutes_the_alert(rig: Rig) -> None:
    """An alert matching a silence made through the API is shown suppressed."""
    with TestClient(rig.api) as client:
        until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        made = client.post(
            SILENCES, json={"matchers": {"component": "duckdb"}, "ends_at": until}, headers=AUTH
        )
        assert made.status_code == 201
        rig.service.manager.fire(DOWN)
        (alert,) = client.get("/health/alerts", headers=AUTH).json()["active"]
        assert alert["state"] == "suppressed"
        assert rig.service.firing_by_severity()["error"] == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"duration": "1h"}, id="no-matchers"),
        pytest.param({"matchers": {}, "duration": "1h"}, id="empty-matchers"),
        pytest.param({"matchers": {"component": "=~("}, "duration": "1h"}, id="bad-regex"),
        pytest.param({"matchers": {"bad label": "x"}, "duration": "1h"}, id="bad-label"),
        pytest.param({"matchers": {"component": "duckdb"}}, id="no-end"),
        pytest.param(
            {"matchers": {"component": "duckdb"}, "duration": "1h", "ends_at": "2999-01-01T00:00Z"},
            id="both-ends",
        ),
        pytest.param(
            {"matchers": {"component": "duckdb"}, "duration": "forever"}, id="bad-duration"
        ),
        pytest.param({"matchers": {"component": "duckdb"}, "duration": -5}, id="negative"),
        pytest.param({"matchers": {"component": "duckdb"}, "duration": "400d"}, id="too-long"),
        pytest.param(
            {"matchers": {"component": "duckdb"}, "ends_at": "2001-01-01T00:00:00Z"}, id="past"
        ),
        pytest.param(
            {"matchers": {"component": "duckdb"}, "ends_at": "2999-01-01T00:00:00"}, id="naive"
        ),
        pytest.param(
            '{"matchers": {"component": "duckdb"}, "duration": "1h", "comment": "\\ud800"}',
            id="lone-surrogate",
        ),
        pytest.param('{"matchers": {"component": "duckdb"', id="not-json"),
        pytest.param(
            {"matchers": {"component": "duckdb"}, "duration": "1h", "extra": 1}, id="unknown-key"
        ),
    ],
)
def test_bad_silence_requests_are_422_json(rig: Rig, body: dict[str, Any] | str) -> None:
    """Every malformed request is refused with 422 JSON and stores nothing."""
    with TestClient(rig.api) as client:
        if isinstance(body, str):  # raw JSON text, as a client could send it
            headers = {**AUTH, "Content-Type": "application/json"}
            response = client.post(SILENCES, content=body.encode(), headers=headers)
        else:
            response = client.post(SILENCES, json=body, headers=AUTH)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid request"
        assert client.get("/health/alerts", headers=AUTH).json()["silences"] == []


def test_silence_endpoints_need_the_token(rig: Rig) -> None:
    """Without the bearer token both silence endpoints answer 401."""
    with TestClient(rig.api) as client:
        body = {"matchers": {"component": "duckdb"}, "duration": "1h"}
        assert client.post(SILENCES, json=body).status_code == 401
        assert client.delete(f"{SILENCES}/{uuid.uuid4()}").status_code == 401
        assert client.post(SILENCES, json=body, headers=AUTH).status_code == 201


def test_planted_password_never_comes_back(rig: Rig) -> None:
    """A password in a silence comment or an alert is masked in every answer."""
    with TestClient(rig.api) as client:
        made = client.post(
            SILENCES,
            json={
                "matchers": {"component": "duckdb"},
                "duration": "1h",
                "comment": f"see postgresql://app:{PLANTED}@db/x",
            },
            headers=AUTH,
        )
        rig.service.manager.fire({**DOWN, "component": "ollama"}, {"note": f"password={PLANTED}"})
        listed = client.get("/health/alerts", headers=AUTH)
        for response in (made, listed):
            assert PLANTED not in response.text
        assert "postgresql://app:" in made.text


def test_openapi_describes_the_silence_endpoints(rig: Rig) -> None:
    """/openapi.json has both operations with their bodies and answers."""
    with TestClient(rig.api) as client:
        spec = client.get("/openapi.json").json()
    post = spec["paths"][SILENCES]["post"]
    assert {"201", "401", "422", "503"} <= set(post["responses"])
    assert "requestBody" in post
    delete = spec["paths"][SILENCES + "/{silence_id}"]["delete"]
    assert {"200", "401", "404"} <= set(delete["responses"])


def test_silence_endpoints_conform_to_their_openapi(rig: Rig) -> None:
    """Generated requests, valid and invalid, never get a 5xx and every body fits its schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", rig.api)
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith(SILENCES) or result.ok().path == "/health/alerts"
    ]
    assert len(operations) == 3
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            inputs = operation.query or operation.body or operation.path_parameters
            if mode is GenerationMode.NEGATIVE and not inputs:
                continue  # nothing to make invalid: GET /health/alerts takes no input

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=40,
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
