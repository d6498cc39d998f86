"""Alert sources: health transitions, breakers, dead letters, resource thresholds, escalations,
and the redactor on everything that enters an alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from biomem.alerts import AlertAdapters
from biomem.health.model import (
    ComponentHealth,
    HealthSnapshot,
    Measurement,
    Status,
    StatusTransition,
)
from biomem.resilience.breaker import BreakerState, StateTransition
from biomem.resilience.deadletter import (
    DeadLetterQueue,
    DuckDBDeadLetterStore,
    ReplayRegistry,
)
from biomem.resilience.errors import DatabaseUnavailable
from biomem.store import DuckDBStore
from tests.support.alert_rig import DOWN, Env, make_env

PLANTED = "hunter2-planted"


@pytest.fixture
def env(store: DuckDBStore) -> Iterator[Env]:
    yield make_env(store)


def labels_of(env: Env, status: str = "firing") -> list[dict[str, str]]:
    return [a["labels"] for a in env.manager.snapshot()["active"] if a["status"] == status]


def test_health_transitions_fire_and_resolve(env: Env) -> None:
    """Worsening fires the matching alert; healthy again resolves it."""
    adapters = AlertAdapters(env.manager)

    def move(previous: Status, current: Status) -> None:
        adapters.on_health_transition(
            StatusTransition(component="duckdb", previous=previous, current=current, at=env.wall())
        )

    move(Status.HEALTHY, Status.DEGRADED)
    move(Status.DEGRADED, Status.CRITICAL)
    assert labels_of(env) == [
        {"alertname": "ComponentUnhealthy", "component": "duckdb", "severity": "critical"}
    ]
    move(Status.CRITICAL, Status.HEALTHY)
    assert labels_of(env) == []


def test_breaker_open_fires_and_close_resolves(env: Env) -> None:
    """CircuitOpen fires on OPEN, stays through HALF_OPEN, resolves on CLOSED."""
    adapters = AlertAdapters(env.manager)
    states = [BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    adapters.on_breaker_event(StateTransition("ollama", states[0], states[1], 1.0))
    env.run(10)
    adapters.on_breaker_event(StateTransition("ollama", states[1], states[2], 2.0))
    assert env.manager.stats().firing == 1
    adapters.on_breaker_event(StateTransition("ollama", states[2], states[3], 3.0))
    env.run(30)
    assert [p["status"] for p in env.payloads()] == ["firing", "resolved"]
    assert env.payloads()[0]["commonLabels"]["alertname"] == "CircuitOpen"


def test_dead_letter_turning_dead_fires_redacted(env: Env, store: DuckDBStore) -> None:
    """A letter given up on fires DeadLetterDead; the error's planted password is masked."""
    registry = ReplayRegistry()

    def still_down(payload: Any) -> None:
        raise DatabaseUnavailable("postgresql", f"password={PLANTED} rejected")

    registry.register("writeback.dream", still_down)
    dlq_store = DuckDBDeadLetterStore(store)
    dlq_store.ensure_schema()
    dlq = DeadLetterQueue(dlq_store, registry, max_attempts=2, wall_clock=env.wall)
    dlq.add_listener(AlertAdapters(env.manager).on_dead_letter_dead)
    dlq.put(
        "writeback.dream",
        {"dream": 1},
        DatabaseUnavailable("postgresql", "down"),
        idempotency_key="dream-1",
        component="postgresql",
    )
    assert dlq.replay(status=None).dead
    (labels,) = labels_of(env)
    assert labels["alertname"] == "DeadLetterDead"
    env.run(10)
    (note,) = env.outbox.list()
    assert PLANTED not in note.payload
    assert "rejected" in note.payload


# --------------------------------------------------------------------------- resources


def system(
    env: Env,
    *,
    memory: float = 50.0,
    disk: float = 50.0,
    cpu: float = 10.0,
    cpu_status: Status = Status.HEALTHY,
    fds: Status = Status.HEALTHY,
) -> HealthSnapshot:
    """A system_resources result graded as the real check grades it (80/90, 85/95, 80/95)."""

    def grade(value: float, degraded: float, critical: float) -> Status:
        if value > critical:
            return Status.CRITICAL
        return Status.DEGRADED if value > degraded else Status.HEALTHY

    measurements = (
        Measurement(
            name="memoryUtilization",
            value=memory,
            unit="percent",
            status=grade(memory, 80, 90),
            output=f"memory {memory:.1f}%",
        ),
        Measurement(name="diskUtilization", value=disk, unit="percent", status=grade(disk, 85, 95)),
        Measurement(name="cpuUtilization", value=cpu, unit="percent", status=cpu_status),
        Measurement(name="openFileDescriptors", value=900, status=fds),
    )
    worst = max((m.status for m in measurements), key=lambda s: s.rank)
    component = ComponentHealth(
        name="system_resources",
        component_type="system",
        status=worst,
        required=True,
        checked_at=env.wall(),
        duration_ms=1.0,
        measurements=measurements,
        details={"thresholds": {"cpu_degraded_percent": 80, "cpu_critical_percent": 95}},
    )
    return HealthSnapshot(
        status=worst, components={"system_resources": component}, taken_at=env.wall()
    )


def resource_alerts(env: Env) -> dict[str, str]:
    return {
        labels["resource"]: labels["severity"]
        for labels in labels_of(env)
        if labels["alertname"] == "ResourceThresholdExceeded"
    }


def test_resource_thresholds_fire_by_severity_and_resolve_when_back_under(env: Env) -> None:
    """Degraded → warning, critical → critical, per resource; back under resolves it."""
    adapters = AlertAdapters(env.manager)
    adapters.on_snapshot(system(env, memory=85, disk=97))
    assert resource_alerts(env) == {"memory": "warning", "disk": "critical"}
    adapters.on_snapshot(system(env, memory=95, disk=97, fds=Status.DEGRADED))
    assert resource_alerts(env) == {"memory": "critical", "disk": "critical", "fds": "warning"}
    adapters.on_snapshot(system(env))
    assert resource_alerts(env) == {}


def test_cpu_over_critical_is_a_critical_alert_though_health_only_degrades(env: Env) -> None:
    """The CPU measurement stops at degraded (health); its alert says critical over 95 %."""
    adapters = AlertAdapters(env.manager)
    adapters.on_snapshot(system(env, cpu=99.0, cpu_status=Status.DEGRADED))
    assert resource_alerts(env) == {"cpu": "critical"}
    adapters.on_snapshot(system(env, cpu=85.0, cpu_status=Status.DEGRADED))
    assert resource_alerts(env) == {"cpu": "warning"}


def test_resource_alert_notification_carries_the_reading(env: Env) -> None:
    """The notification names the resource and its value."""
    adapters = AlertAdapters(env.manager)
    adapters.on_snapshot(system(env, memory=91))
    env.run(10)
    (payload,) = env.payloads()
    (alert,) = payload["alerts"]
    assert alert["labels"] == {
        "alertname": "ResourceThresholdExceeded",
        "component": "system_resources",
        "resource": "memory",
        "severity": "critical",
    }
    assert alert["annotations"]["value"] == "91%"


# --------------------------------------------------------------------------- escalations


def healthy(env: Env, component: str, status: Status, at: datetime) -> HealthSnapshot:
    result = ComponentHealth(
        name=component,
        component_type="datastore",
        status=status,
        required=False,
        checked_at=at,
        duration_ms=1.0,
    )
    return HealthSnapshot(status=status, components={component: result}, taken_at=at)


def test_escalation_fires_critical_and_resolves_on_the_next_healthy_result(env: Env) -> None:
    """RecoveryEscalated stays firing through unhealthy results and resolves once healthy."""
    adapters = AlertAdapters(env.manager)
    at = env.wall()
    adapters.on_escalation(
        rule="reconnect_pg", component="postgresql", summary="reconnect failed 3 times", at=at
    )
    assert labels_of(env) == [
        {
            "alertname": "RecoveryEscalated",
            "rule": "reconnect_pg",
            "component": "postgresql",
            "severity": "critical",
        }
    ]
    adapters.on_snapshot(healthy(env, "postgresql", Status.HEALTHY, at - timedelta(seconds=5)))
    adapters.on_snapshot(healthy(env, "postgresql", Status.UNHEALTHY, at + timedelta(seconds=5)))
    assert len(labels_of(env)) == 1  # an old healthy result and a new unhealthy one: still firing
    adapters.on_snapshot(healthy(env, "postgresql", Status.HEALTHY, at + timedelta(seconds=20)))
    assert labels_of(env) == []


def test_alert_service_escalate_signature() -> None:
    """AlertService.escalate takes exactly rule, component and summary, keyword-only."""
    import inspect

    from biomem.alerting import AlertService

    signature = inspect.signature(AlertService.escalate)
    assert [(p.name, p.kind) for p in signature.parameters.values()] == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("rule", inspect.Parameter.KEYWORD_ONLY),
        ("component", inspect.Parameter.KEYWORD_ONLY),
        ("summary", inspect.Parameter.KEYWORD_ONLY),
    ]
    assert signature.return_annotation in (None, "None")


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({"password": PLANTED}, id="secret-key"),
        pytest.param({"description": f"connect failed: password={PLANTED}"}, id="in-text"),
        pytest.param({"dsn": f"postgresql://u:{PLANTED}@db/x"}, id="url"),
    ],
)
def test_planted_secret_never_reaches_the_payload(env: Env, annotations: dict[str, str]) -> None:
    """A password in an annotation is masked before it is stored or sent."""
    env.manager.fire(DOWN, annotations)
    env.run(10)
    (note,) = env.outbox.list()
    assert PLANTED not in note.payload
    assert PLANTED not in json.dumps(env.manager.snapshot())


def test_planted_secret_in_every_source_is_masked(env: Env) -> None:
    """Health output, escalation summary and labels with a password: masked everywhere."""
    adapters = AlertAdapters(env.manager)
    adapters.on_health_transition(
        StatusTransition(
            component="postgresql",
            previous=Status.HEALTHY,
            current=Status.UNHEALTHY,
            at=env.wall(),
            output=f"connect to postgresql://app:{PLANTED}@db:5432/mem failed",
        )
    )
    adapters.on_escalation(
        rule="reconnect",
        component="postgresql",
        summary=f"gave up; last error: password={PLANTED}",
        at=env.wall(),
    )
    env.manager.fire({"alertname": "Custom", "token": PLANTED})
    env.run(10)
    stored = [n.payload for n in env.outbox.list()]
    assert stored
    for text in [*stored, json.dumps(env.manager.snapshot())]:
        assert PLANTED not in text
