"""Alert manager on a fake clock: lifecycle, grouping, group_interval, repeat, silences, payload."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from biomem.alerts import AlertManager, Outbox, Receiver, fingerprint
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import DatabaseUnavailable
from biomem.store import DuckDBStore
from tests.support.alert_rig import DOWN, EPOCH, Env, make_env


@pytest.fixture
def env(store: DuckDBStore) -> Iterator[Env]:
    yield make_env(store)


def test_new_alert_notifies_once_after_group_wait(env: Env) -> None:
    """A new alert is pending until group_wait, then exactly one firing notification."""
    env.manager.fire(DOWN, {"summary": "duckdb is down"})
    env.run(9)
    assert env.outbox.list() == []
    env.run(60)
    (payload,) = env.payloads()
    assert payload["status"] == "firing"
    assert payload["alerts"][0]["labels"] == DOWN


def test_resolve_sends_one_resolved_after_settle(env: Env) -> None:
    """A resolved alert produces one resolved notification once the settle time passed."""
    env.manager.fire(DOWN)
    env.run(10)
    env.manager.resolve(DOWN)
    env.run(29)
    assert len(env.outbox.list()) == 1
    env.run(120)
    firing, resolved = env.payloads()
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert env.manager.snapshot()["active"] == []
    assert env.manager.snapshot()["recent"][0]["fingerprint"] == fingerprint(DOWN)


def test_flapping_within_settle_sends_nothing_more(env: Env) -> None:
    """Resolve/fire flapping inside the settle time never sends resolved or firing again."""
    env.manager.fire(DOWN)
    env.run(10)
    for _ in range(10):
        env.manager.resolve(DOWN)
        env.run(5)
        env.manager.fire(DOWN)
        env.run(5)
    assert [p["status"] for p in env.payloads()] == ["firing"]


def test_alert_resolved_before_group_wait_sends_nothing(env: Env) -> None:
    """An alert that fires and resolves before anyone was told stays silent."""
    env.manager.fire(DOWN)
    env.run(3)
    env.manager.resolve(DOWN)
    env.run(100)
    assert env.outbox.list() == []


def test_alerts_within_group_wait_go_out_together(env: Env) -> None:
    """Three alerts of one alertname fired within group_wait make one notification."""
    for component in ("duckdb", "postgresql", "ollama"):
        env.manager.fire({**DOWN, "component": component})
        env.run(2)
    env.run(20)
    (payload,) = env.payloads()
    assert len(payload["alerts"]) == 3
    assert payload["groupLabels"] == {"alertname": "ComponentUnhealthy"}
    assert payload["commonLabels"] == {"alertname": "ComponentUnhealthy", "severity": "error"}


def test_alert_joining_a_notified_group_waits_for_group_interval(store: DuckDBStore) -> None:
    """After a group's first notification, a new alert joining it waits group_interval."""
    env = make_env(store, group_interval_s=300)
    env.manager.fire(DOWN)
    env.run(10)  # first notification at t=10 (group_wait)
    env.run(50)
    env.manager.fire({**DOWN, "component": "ollama"})
    env.run(200)  # group_wait has long passed, group_interval has not (t=260 < 310)
    assert len(env.payloads()) == 1
    env.run(50)  # t=310: 300 s after the first notification
    first, second = env.payloads()
    assert len(first["alerts"]) == 1
    assert {a["labels"]["component"] for a in second["alerts"]} == {"duckdb", "ollama"}
    assert env.clock.monotonic() - 1000 == pytest.approx(310)


def test_resolution_waits_for_group_interval_too(store: DuckDBStore) -> None:
    """A settled resolution goes out at the group's next interval, not before."""
    env = make_env(store, group_interval_s=300, resolve_settle_s=30)
    env.manager.fire(DOWN)
    env.run(10)
    env.manager.resolve(DOWN)
    env.run(299)  # settled long ago; 299 s since the first notification (t=10)
    assert len(env.payloads()) == 1
    env.run(1)
    assert [p["status"] for p in env.payloads()] == ["firing", "resolved"]


def test_still_firing_repeats_after_repeat_interval(env: Env) -> None:
    """An alert still firing is notified again once per repeat interval."""
    env.manager.fire(DOWN)
    env.run(10)
    env.run(3600 - 10, step=10)
    assert len(env.outbox.list()) == 1
    env.run(3600 + 20, step=10)
    assert [p["status"] for p in env.payloads()] == ["firing", "firing", "firing"]


def test_receivers_get_only_the_alerts_their_matchers_route(store: DuckDBStore) -> None:
    """Receivers with matchers receive the matching alerts of a group; others all of them."""
    receivers = [
        Receiver(name="all", url="http://127.0.0.1:9/a"),
        Receiver(name="pager", url="http://127.0.0.1:9/p", matchers={"severity": "critical"}),
        Receiver(name="db", url="http://127.0.0.1:9/d", matchers={"component": "=~duck.*|pg"}),
    ]
    env = make_env(store, receivers=receivers)
    env.manager.fire(DOWN)
    env.manager.fire({**DOWN, "component": "ollama", "severity": "critical"})
    env.run(10)

    def components(receiver: str) -> list[set[str]]:
        return [{a["labels"]["component"] for a in p["alerts"]} for p in env.payloads(receiver)]

    assert components("all") == [{"duckdb", "ollama"}]
    assert components("pager") == [{"ollama"}]
    assert components("db") == [{"duckdb"}]


# --------------------------------------------------------------------------- silences


def test_silenced_alert_is_not_notified_until_silence_ends(env: Env) -> None:
    """A matching silence suppresses notifications; after it ends the alert is notified."""
    silence = env.manager.silence(
        {"component": "=~duck.*"}, ends_at=env.wall() + timedelta(hours=1)
    )
    env.manager.fire(DOWN)
    env.run(120)
    assert env.outbox.list() == []
    assert env.manager.snapshot()["active"][0]["state"] == "suppressed"
    assert env.manager.unsilence(silence.id) is not None
    env.run(9)
    assert env.outbox.list() == []
    env.run(2)
    assert len(env.outbox.list()) == 1


def test_silence_expires_by_itself_on_the_managers_clock(env: Env) -> None:
    """A silence stops muting at its end time, as the manager's clock tells it."""
    env.manager.silence(
        {"alertname": "ComponentUnhealthy"}, ends_at=env.wall() + timedelta(seconds=60)
    )
    env.manager.fire(DOWN)
    env.run(60)
    assert env.outbox.list() == []
    env.run(11)
    assert len(env.outbox.list()) == 1
    assert env.manager.silences() == []


def test_silences_survive_a_restart_and_record_who_and_why(store: DuckDBStore) -> None:
    """A silence is stored: a new manager on the same store loads it (until it expires)."""
    clock = FakeClock(1000.0)
    first = make_env(store, clock=clock)
    made = first.manager.silence(
        {"component": "duckdb"},
        ends_at=first.wall() + timedelta(minutes=10),
        comment="maintenance",
        created_by="alice",
    )
    restarted = make_env(store, clock=clock)
    (shown,) = restarted.manager.silences()
    assert shown["id"] == made.id
    assert (shown["createdBy"], shown["comment"], shown["status"]) == (
        "alice",
        "maintenance",
        "active",
    )
    restarted.manager.fire(DOWN)
    restarted.run(60)
    assert restarted.outbox.list() == []
    clock.advance(600)
    assert make_env(store, clock=clock).manager.silences() == []


def test_unsilence_is_stored_too(store: DuckDBStore) -> None:
    """An ended silence is not loaded again; ending an unknown one says so."""
    clock = FakeClock(1000.0)
    env = make_env(store, clock=clock)
    made = env.manager.silence({"component": "duckdb"}, ends_at=env.wall() + timedelta(hours=1))
    ended = env.manager.unsilence(made.id)
    assert ended is not None and ended.ends_at == env.wall()
    assert env.manager.unsilence(made.id) is None
    assert make_env(store, clock=clock).manager.silences() == []


@pytest.mark.parametrize(
    ("matchers", "ends_in"),
    [
        pytest.param({}, timedelta(hours=1), id="no-matcher"),
        pytest.param({"component": "=~("}, timedelta(hours=1), id="bad-regex"),
        pytest.param({"bad label": "x"}, timedelta(hours=1), id="bad-label"),
        pytest.param({"component": "duckdb"}, timedelta(0), id="not-in-future"),
    ],
)
def test_bad_silences_are_refused(env: Env, matchers: dict[str, str], ends_in: timedelta) -> None:
    """A silence without matchers, with a bad one, or already over is refused and not stored."""
    with pytest.raises(ValueError):
        env.manager.silence(matchers, ends_at=env.wall() + ends_in)
    assert env.silences is not None and env.silences.active(env.wall()) == []


def test_silence_comment_is_redacted(env: Env) -> None:
    """A password pasted into a silence comment is masked before it is stored."""
    env.manager.silence(
        {"component": "duckdb"},
        ends_at=env.wall() + timedelta(hours=1),
        comment="db at postgresql://app:hunter2-planted@db/x is moving",
    )
    assert env.silences is not None
    (stored,) = env.silences.active(env.wall())
    assert "hunter2-planted" not in stored.comment


# --------------------------------------------------------------------------- payload


def test_payload_is_alertmanager_webhook_v4(env: Env) -> None:
    """The body has every v4 key with the right types and RFC 3339 times."""
    env.manager.fire(DOWN, {"summary": "down"})
    env.run(10)
    (payload,) = env.payloads()
    expected = {
        "version": str,
        "groupKey": str,
        "truncatedAlerts": int,
        "status": str,
        "receiver": str,
        "groupLabels": dict,
        "commonLabels": dict,
        "commonAnnotations": dict,
        "externalURL": str,
        "alerts": list,
    }
    assert set(payload) == set(expected)
    assert all(isinstance(payload[k], t) for k, t in expected.items())
    assert payload["version"] == "4"
    assert payload["truncatedAlerts"] == 0
    assert payload["receiver"] == "ops"
    assert payload["groupKey"] == '{}:{alertname="ComponentUnhealthy"}'
    assert payload["externalURL"] == "http://biomem.local:8080"
    (alert,) = payload["alerts"]
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["startsAt"] == (EPOCH + timedelta(seconds=1000)).isoformat().replace("+00:00", "Z")
    assert alert["fingerprint"] == fingerprint(DOWN)


def test_snapshot_matches_alerts_body(env: Env) -> None:
    """snapshot() validates as the /health/alerts body, with silences and notifications."""
    from biomem.health.api import AlertsBody

    env.manager.silence({"component": "postgresql"}, ends_at=env.wall() + timedelta(hours=1))
    env.manager.fire(DOWN)
    env.run(10)
    snapshot = env.manager.snapshot()
    assert set(snapshot) == {"active", "recent", "undelivered", "silences", "notifications"}
    assert snapshot["undelivered"] == 1
    (note,) = snapshot["notifications"]
    assert (note["status"], note["kind"], note["receiver"]) == ("pending", "firing", "ops")
    assert snapshot["silences"][0]["matchers"] == {"component": "postgresql"}
    AlertsBody.model_validate(snapshot)


def test_firing_by_severity_leaves_silenced_alerts_out(env: Env) -> None:
    """Every severity is counted (zero included); silenced alerts are not firing loudly."""
    env.manager.fire(DOWN)
    env.manager.fire({**DOWN, "component": "ollama", "severity": "critical"})
    env.manager.silence({"component": "ollama"}, ends_at=env.wall() + timedelta(hours=1))
    assert env.manager.firing_by_severity() == {
        "info": 0,
        "warning": 0,
        "error": 1,
        "critical": 0,
    }


def test_incident_the_outbox_could_not_take_is_told_once_it_resolves(store: DuckDBStore) -> None:
    """An alert that came due while the outbox could not be written (a full disk) and then
    resolved is still sent, as resolved with its start and end, once the outbox works."""

    class FullDiskOutbox(Outbox):
        full = True

        def enqueue(self, items: Any, *, now: datetime) -> Any:
            if self.full:
                raise DatabaseUnavailable("duckdb", "No space left on device")
            return super().enqueue(items, now=now)

    clock = FakeClock(1000.0)
    outbox = FullDiskOutbox(store)
    outbox.ensure_schema()
    manager = AlertManager(
        clock=clock,
        wall_clock=lambda: EPOCH + timedelta(seconds=clock.monotonic()),
        outbox=outbox,
        receivers=[Receiver(name="ops", url="http://127.0.0.1:9/hook")],
        group_wait_s=10,
        repeat_interval_s=3600,
        resolve_settle_s=30,
    )

    def run(seconds: int) -> None:
        for _ in range(seconds):
            clock.advance(1)
            with contextlib.suppress(DatabaseUnavailable):
                manager.tick()

    manager.fire(DOWN)
    run(20)  # due after 10 s; every write fails
    manager.resolve(DOWN)
    outbox.full = False
    run(60)
    (note,) = outbox.list()
    payload = json.loads(note.payload)
    assert payload["status"] == "resolved"
    assert payload["alerts"][0]["labels"] == DOWN
    assert payload["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
