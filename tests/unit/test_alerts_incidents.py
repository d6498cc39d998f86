"""One incident, one firing and one resolved notification per group, on a fake clock.

The alerts of an incident fire at different moments (a health check fails,
then the breaker opens) and clear at different moments (the check passes, the
breaker's trial calls close it); these tests hold the manager to telling each
receiver once when the incident starts and once when it is over. The groups
are the daemon's: ``group_by=()``, one group for every alert.
"""

from __future__ import annotations

from typing import Any

import pytest

from biomem.alerts import Receiver
from biomem.store import DuckDBStore
from tests.support.alert_rig import Env, make_env

# Shorthands for (alertname/component, status) in the expected notifications.
UNHEALTHY_FIRING = ("ComponentUnhealthy/ollama", "firing")
UNHEALTHY_RESOLVED = ("ComponentUnhealthy/ollama", "resolved")
OTHER_FIRING = ("CircuitOpen/postgresql", "firing")

UNHEALTHY = {"alertname": "ComponentUnhealthy", "component": "ollama", "severity": "error"}
BREAKER = {"alertname": "CircuitOpen", "component": "ollama", "severity": "error"}
OVERALL = {"alertname": "ComponentDegraded", "component": "overall", "severity": "warning"}
RECOVERING = {"alertname": "ComponentDegraded", "component": "ollama", "severity": "warning"}
OTHER = {"alertname": "CircuitOpen", "component": "postgresql", "severity": "error"}


@pytest.fixture
def env(store: DuckDBStore) -> Env:
    # group_wait 10 s, group_interval 30 s, settle 30 s (see make_env).
    return make_env(store, group_by=())


def summary(env: Env, receiver: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each notification as (status, [(alertname/component, alert status)])."""

    def name(alert: dict[str, Any]) -> str:
        return f"{alert['labels']['alertname']}/{alert['labels']['component']}"

    return [
        (p["status"], [(name(a), a["status"]) for a in p["alerts"]]) for p in env.payloads(receiver)
    ]


def test_alerts_of_one_incident_go_out_once_firing_and_once_resolved(env: Env) -> None:
    """Alerts raised seconds apart and cleared seconds apart: one firing, one resolved."""
    env.manager.fire(UNHEALTHY)
    env.manager.fire(OVERALL)
    env.run(4)
    env.manager.fire(BREAKER)  # the breaker opens a few failed calls later
    env.run(60)
    env.manager.resolve(UNHEALTHY)  # the check passes while the breaker's trials run
    env.manager.fire(RECOVERING)  # degraded for a check: a passing state
    env.run(2)
    env.manager.resolve(RECOVERING)
    env.manager.resolve(BREAKER)
    env.manager.resolve(OVERALL)
    env.run(120)
    names = ["ComponentUnhealthy/ollama", "ComponentDegraded/overall", "CircuitOpen/ollama"]
    assert summary(env) == [
        ("firing", [(name, "firing") for name in names]),
        ("resolved", [(name, "resolved") for name in names]),
    ]


def test_alert_joining_a_notified_group_waits_group_wait_for_its_companions(
    env: Env,
) -> None:
    """In a group notified long ago, a second incident's alerts still go out together."""
    env.manager.fire(UNHEALTHY)
    env.run(100)
    env.manager.fire(OTHER)
    env.run(5)
    env.manager.fire({**OTHER, "alertname": "ComponentUnhealthy"})
    env.run(4)
    assert len(env.payloads()) == 1  # the first alert has not waited group_wait yet
    env.run(20)
    _, second = summary(env)
    assert [n for n, _ in second[1]] == [
        "ComponentUnhealthy/ollama",
        "CircuitOpen/postgresql",
        "ComponentUnhealthy/postgresql",
    ]


def test_a_state_passing_within_group_wait_is_never_told(env: Env) -> None:
    """A new alert that fires and resolves within group_wait in a notified group sends nothing."""
    env.manager.fire(UNHEALTHY)
    env.run(100)
    env.manager.fire(RECOVERING)
    env.run(8)
    env.manager.resolve(RECOVERING)
    env.run(100)
    assert summary(env) == [("firing", [UNHEALTHY_FIRING])]


def test_an_alert_settling_is_listed_as_firing_until_its_resolution_is_told(env: Env) -> None:
    """While one alert's resolution settles, a group update lists it firing, never drops it."""
    env.manager.fire(UNHEALTHY)
    env.run(100)
    env.manager.resolve(UNHEALTHY)
    env.manager.fire(OTHER)
    env.run(15)  # OTHER waited group_wait: an update, UNHEALTHY still settling
    env.run(100)
    assert summary(env) == [
        ("firing", [UNHEALTHY_FIRING]),
        ("firing", [OTHER_FIRING, UNHEALTHY_FIRING]),
        ("firing", [OTHER_FIRING, UNHEALTHY_RESOLVED]),
    ]
    settling = env.payloads()[1]["alerts"][1]
    assert settling["endsAt"] == "0001-01-01T00:00:00Z"


def test_resolutions_wait_for_a_flapping_neighbour_at_most_one_settle_time(env: Env) -> None:
    """A settled resolution is held while a neighbour keeps settling, but not for ever."""
    env.manager.fire(UNHEALTHY)
    env.manager.fire(OTHER)
    env.run(90)  # t=100
    env.manager.resolve(UNHEALTHY)

    def flap(seconds: int) -> None:  # OTHER clears and fires again every second
        for _ in range(seconds):
            env.manager.fire(OTHER)
            env.manager.resolve(OTHER)
            env.run(1)

    flap(59)  # settled at 30 s, held since
    assert len(env.payloads()) == 1
    flap(1)  # 60 s: one settle time more, it goes out; OTHER is still firing to receivers
    assert summary(env)[1:] == [("firing", [OTHER_FIRING, UNHEALTHY_RESOLVED])]


def test_receivers_hear_of_a_group_only_when_their_part_of_it_changes(store: DuckDBStore) -> None:
    """A routed receiver is not re-sent its unchanged alerts when others join or resolve, and
    one without send_resolved is not told of a group that only shrank."""
    receivers = [
        Receiver(name="all", url="http://127.0.0.1:9/a"),
        Receiver(name="pager", url="http://127.0.0.1:9/p", matchers={"component": "ollama"}),
        Receiver(name="chat", url="http://127.0.0.1:9/c", send_resolved=False),
    ]
    env = make_env(store, receivers=receivers, group_by=())
    env.manager.fire(UNHEALTHY)
    env.manager.fire(OTHER)
    env.run(40)
    env.manager.fire({**OTHER, "alertname": "ComponentUnhealthy"})  # not the pager's
    env.run(40)
    env.manager.resolve(OTHER)  # not the pager's either
    env.run(80)
    assert [len(p["alerts"]) for p in env.payloads("all")] == [2, 3, 3]
    assert summary(env, "pager") == [("firing", [UNHEALTHY_FIRING])]
    assert [len(p["alerts"]) for p in env.payloads("chat")] == [2, 3]
    env.manager.fire(OTHER)  # back: new to everyone who was told it ended
    env.run(40)
    assert len(env.payloads("chat")) == 3
    assert len(env.payloads("pager")) == 1
