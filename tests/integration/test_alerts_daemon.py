"""Alerts through the real daemon (``biomem run``) to real HTTP receivers on loopback.

One incident (the fake Ollama stops, then comes back) reaches the receiver of
ollama's alerts as exactly one firing and one resolved notification; a
receiver that is down while the daemon is SIGKILLed gets every waiting
notification once the receiver and the daemon are back, exactly once and in
order per alert. Every request is checked as a receiver would: the body
against a JSON Schema of Alertmanager's webhook version 4, the HMAC signature
recomputed over the timestamp and the raw body, the timestamp fresh, the
Idempotency-Key never seen before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from biomem.alerts import NotificationStatus, Outbox
from biomem.store import DuckDBStore
from tests.chaos.harness import Daemon, wait_for
from tests.conftest import SAMPLES, run_cli
from tests.fakes.ollama import FakeOllama
from tests.support.alert_rig import Received, WebhookServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "receiver-shared-secret-0123456789"
ONCALL_SECRET = "oncall-shared-secret-0123456789"
ZERO_TIME = "0001-01-01T00:00:00Z"
REPLAY_WINDOW_S = 300  # what a receiver tolerates between the timestamp and its clock

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_TIME = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
}
# Alertmanager's webhook body, version 4 (its docs' "webhook_config" payload).
ALERTMANAGER_WEBHOOK_V4: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ],
    "properties": {
        "version": {"const": "4"},
        "groupKey": {"type": "string", "minLength": 1},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string", "minLength": 1},
        "groupLabels": _LABELS,
        "commonLabels": _LABELS,
        "commonAnnotations": _LABELS,
        "externalURL": {"type": "string"},
        "alerts": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "status",
                    "labels",
                    "annotations",
                    "startsAt",
                    "endsAt",
                    "generatorURL",
                    "fingerprint",
                ],
                "properties": {
                    "status": {"enum": ["firing", "resolved"]},
                    "labels": {**_LABELS, "required": ["alertname"]},
                    "annotations": _LABELS,
                    "startsAt": _TIME,
                    "endsAt": _TIME,
                    "generatorURL": {"type": "string"},
                    "fingerprint": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}
V4 = jsonschema_rs.validator_for(ALERTMANAGER_WEBHOOK_V4)


def accept(request: Received, secret: str, seen: set[str]) -> dict[str, Any]:
    """What a receiver does before acting on a request; its payload.

    The signature is recomputed here (not with biomem's helper), as a receiver
    written for these headers would.
    """
    stamp = request.headers["x-biomem-timestamp"]
    assert abs(time.time() - int(stamp)) <= REPLAY_WINDOW_S, "stale: a replay or a bad clock"
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest("sha256=" + mac.hexdigest(), request.headers["x-biomem-signature"])
    key = request.headers["idempotency-key"]
    assert key not in seen, f"notification {key} delivered twice"
    seen.add(key)
    payload: dict[str, Any] = json.loads(request.body)
    V4.validate(payload)
    return payload


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    server = FakeOllama()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receivers() -> Iterator[dict[str, WebhookServer]]:
    servers = {"oncall": WebhookServer(), "everyone": WebhookServer()}
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def ready(daemon: Daemon) -> bool:
    """The first pass of every stage is done (with the LLM) and ollama reported healthy."""
    events = daemon.log_events()
    passed = any(e.get("event") == "stage_done" and e.get("stage") == "writeback" for e in events)
    response = daemon.get("/health/detailed")
    if not passed or response is None or response.status_code not in (200, 503):
        return False
    return bool(response.json()["components"]["ollama"]["status"] == "healthy")


def breaker_open(daemon: Daemon) -> bool:
    response = daemon.get("/health/detailed")
    if response is None or response.status_code not in (200, 503):
        return False
    states = {b["name"]: b["state"] for b in response.json().get("breakers", [])}
    return states.get("ollama") == "open"


def alert_names(payload: dict[str, Any]) -> list[str]:
    return sorted(a["labels"]["alertname"] for a in payload["alerts"])


def test_one_incident_one_firing_one_resolved(
    tmp_path: Path, ollama: FakeOllama, receivers: dict[str, WebhookServer]
) -> None:
    """Stop the fake Ollama, then start it: ollama's receiver gets one firing notification
    holding the incident's alerts and one resolved notification, both v4 and signed; the
    receiver of every alert never gets a notification that tells it nothing new."""
    oncall, everyone = receivers["oncall"], receivers["everyone"]
    # A user's receiver for one component: routed by matchers. The daemon keeps one
    # group for every alert, so the machine's own alerts (this shared box's CPU) and
    # the overall status share it; they must not reach this receiver again and again.
    config = tmp_path / "biomem.toml"
    config.write_text(
        f"""
[resilience.ollama]
open_seconds = 5  # 30 s by default; shortened like the check interval below

[[alerts.receivers]]
name = "ollama-oncall"
url = "{oncall.url}"
secret_env = "ONCALL_WEBHOOK_SECRET"
matchers = {{ component = "ollama" }}
""",
        encoding="utf-8",
    )
    env = {
        "OLLAMA_URL": ollama.url,
        "BIOMEM_CONFIG_FILE": str(config),
        "ONCALL_WEBHOOK_SECRET": ONCALL_SECRET,
        "HEALTH_ALERT_WEBHOOK_URL": everyone.url,
        "ALERT_WEBHOOK_SECRET": SECRET,
        # Checks every second (15 s by default), so the incident takes seconds.
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        # The group wait must cover the moments an incident's alerts fire at, for them
        # to go out together: the check fails at once, the breaker opens once half of
        # its last 20 calls failed, up to 10 checks later (a user with 15 s checks and
        # the default breaker sizes it the same way, or hears of the breaker in a group
        # update). It also keeps a passing state from being told (degraded for a check
        # while the breaker's trial calls run).
        "ALERT_GROUP_WAIT": "30s",
        "ALERT_GROUP_INTERVAL": "10s",  # 5m by default: shortened like the checks
        "ALERT_RESOLVE_SETTLE": "5s",  # 30s by default: likewise
    }
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    daemon = Daemon(env, tmp_path / "daemon.log")
    try:
        daemon.start()
        wait_for(lambda: ready(daemon), timeout_s=90, what="the first pass, ollama healthy")
        assert oncall.requests == []
        ollama.refuse()  # the incident starts
        wait_for(lambda: breaker_open(daemon), timeout_s=60, what="ollama's breaker open")
        wait_for(lambda: oncall.requests, timeout_s=60, what="the firing notification")
        ollama.restart()  # and ends
        wait_for(
            lambda: any(p["status"] == "resolved" for p in oncall.payloads()),
            timeout_s=90,
            what="the resolved notification",
        )
        # Anything more (an update, a second resolved) would be out within a group
        # interval and a settle time (the passing degraded state ended long ago).
        time.sleep(10 + 5 + 5)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()

    seen: set[str] = set()
    firing, resolved = (accept(r, ONCALL_SECRET, seen) for r in oncall.requests)
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert alert_names(firing) == alert_names(resolved) == ["CircuitOpen", "ComponentUnhealthy"]
    assert firing["receiver"] == resolved["receiver"] == "ollama-oncall"
    assert firing["groupKey"] == resolved["groupKey"]
    assert firing["commonLabels"] == {"component": "ollama", "severity": "error"}
    assert all(a["status"] == "firing" and a["endsAt"] == ZERO_TIME for a in firing["alerts"])
    assert all(a["status"] == "resolved" for a in resolved["alerts"])
    started = {a["fingerprint"]: a["startsAt"] for a in firing["alerts"]}
    assert {a["fingerprint"]: a["startsAt"] for a in resolved["alerts"]} == started
    assert all(a["endsAt"] > a["startsAt"] for a in resolved["alerts"])

    # The receiver of everything: each notification tells it something new, an alert
    # it was not told is firing or a resolution, as Alertmanager's group updates do.
    told: set[str] = set()
    payloads = [accept(r, SECRET, seen) for r in everyone.requests]
    assert payloads, "the default receiver heard nothing"
    for payload in payloads:
        now_firing = {a["fingerprint"] for a in payload["alerts"] if a["status"] == "firing"}
        ended = [a for a in payload["alerts"] if a["status"] == "resolved"]
        assert now_firing - told or ended, f"a notification with nothing new: {payload}"
        told = now_firing
    ollama_fingerprints = {
        a["fingerprint"]
        for p in payloads
        for a in p["alerts"]
        if a["labels"].get("component") == "ollama"
    }
    assert ollama_fingerprints == set(started)


def test_sigkill_with_undelivered_notifications_delivers_them_once_after_restart(
    tmp_path: Path, ollama: FakeOllama, store_path: Path
) -> None:
    """An incident told while the receiver is down waits in the outbox; the daemon is
    SIGKILLed; receiver and daemon back: each notification arrives once, in order per alert."""
    receiver = WebhookServer()
    receiver.start()
    receiver.stop()  # its port is known; nothing listens there: connection refused
    env = {
        "OLLAMA_URL": ollama.url,
        "HEALTH_ALERT_WEBHOOK_URL": receiver.url,
        "ALERT_WEBHOOK_SECRET": SECRET,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "ALERT_GROUP_WAIT": "3s",
        "ALERT_GROUP_INTERVAL": "3s",
        "ALERT_RESOLVE_SETTLE": "3s",
    }
    config = tmp_path / "biomem.toml"
    config.write_text("[resilience.ollama]\nopen_seconds = 3\n", encoding="utf-8")
    env["BIOMEM_CONFIG_FILE"] = str(config)
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0

    def ollama_alerts(daemon: Daemon) -> list[dict[str, Any]]:
        response = daemon.get("/health/alerts")
        assert response is not None and response.status_code == 200
        body: dict[str, Any] = response.json()
        return [a for a in body["active"] if a["labels"].get("component") == "ollama"]

    first = Daemon(env, tmp_path / "first.log")
    try:
        first.start()
        wait_for(lambda: ready(first), timeout_s=90, what="the first pass, ollama healthy")
        ollama.refuse()
        wait_for(
            lambda: any(a["state"] == "active" for a in ollama_alerts(first)),
            timeout_s=60,
            what="ollama's alerts told (enqueued) firing",
        )
        ollama.restart()
        wait_for(
            lambda: not ollama_alerts(first),
            timeout_s=90,
            what="ollama's alerts told (enqueued) resolved",
        )
        first.kill()  # the notifications are in the outbox, none delivered
    finally:
        first.close()
    with DuckDBStore.open(store_path) as store:
        waiting = Outbox(store).list()
    assert waiting and {n.status for n in waiting} == {NotificationStatus.PENDING}
    assert any(n.attempts > 0 for n in waiting), "the receiver was never tried while down"
    told = {
        alert["status"]
        for note in waiting
        for alert in json.loads(note.payload)["alerts"]
        if alert["labels"].get("component") == "ollama"
    }
    assert told == {"firing", "resolved"}, "the whole incident waits in the outbox"

    receiver.start()  # the same port
    second = Daemon(env, tmp_path / "second.log")
    try:
        second.start()
        wanted = {n.id for n in waiting}
        wait_for(
            lambda: wanted <= {r.headers["idempotency-key"] for r in receiver.requests},
            timeout_s=120,
            what="every waiting notification delivered",
        )
        time.sleep(3)  # a duplicate would arrive now
        assert second.stop() == 0, second.log_tail()
    finally:
        second.close()
        receiver.stop()

    with DuckDBStore.open(store_path) as store:
        rows = {n.id: n for n in Outbox(store).list()}
    seen: set[str] = set()
    for request in receiver.requests:  # each once (accept refuses a key seen before)
        accept(request, SECRET, seen)
        note = rows[request.headers["idempotency-key"]]
        assert request.body == note.payload.encode("utf-8")
        assert note.status is NotificationStatus.DELIVERED
    assert seen == set(rows), "every notification in the outbox was delivered"
    # In order per alert: each alert's notifications arrive in the order they were made.
    order: dict[str, list[int]] = {}
    for request in receiver.requests:
        note = rows[request.headers["idempotency-key"]]
        for fp in note.fingerprints:
            order.setdefault(fp, []).append(note.seq)
    assert all(seqs == sorted(seqs) for seqs in order.values()), order
    # Ollama's alerts, as the receiver heard of them: firing first, resolved once, last.
    heard: dict[str, list[str]] = {}
    for request in receiver.requests:
        for alert in request.payload["alerts"]:
            if alert["labels"].get("component") == "ollama":
                heard.setdefault(alert["fingerprint"], []).append(alert["status"])
    assert heard, "nothing about ollama was delivered"
    for statuses in heard.values():
        assert statuses[0] == "firing" and statuses.index("resolved") == len(statuses) - 1


def restart_env(tmp_path: Path, ollama: FakeOllama, oncall: WebhookServer) -> dict[str, str]:
    """A daemon whose receiver takes ollama's alerts only, with short checks and waits."""
    config = tmp_path / "biomem.toml"
    config.write_text(
        f"""
[resilience.ollama]
open_seconds = 5

[[alerts.receivers]]
name = "ollama-oncall"
url = "{oncall.url}"
secret_env = "ONCALL_WEBHOOK_SECRET"
matchers = {{ component = "ollama" }}
""",
        encoding="utf-8",
    )
    env = {
        "OLLAMA_URL": ollama.url,
        "BIOMEM_CONFIG_FILE": str(config),
        "ONCALL_WEBHOOK_SECRET": ONCALL_SECRET,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        # Sized as the README says: long enough for the breaker to open after the check
        # fails (up to 10 checks). The restore grace is derived from it (max(2 s, 30 s)).
        "ALERT_GROUP_WAIT": "30s",
        "ALERT_GROUP_INTERVAL": "5s",
        "ALERT_RESOLVE_SETTLE": "5s",
    }
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    return env


def told_firing_then_stopped(
    tmp_path: Path, env: dict[str, str], ollama: FakeOllama, oncall: WebhookServer
) -> dict[str, str]:
    """Run a daemon, stop Ollama, wait until ollama's alerts are delivered firing, SIGTERM
    the daemon; the fingerprints the receiver was last told are firing, with startsAt."""
    daemon = Daemon(env, tmp_path / "first.log")
    try:
        daemon.start()
        wait_for(lambda: ready(daemon), timeout_s=90, what="the first pass, ollama healthy")
        ollama.refuse()
        wait_for(lambda: breaker_open(daemon), timeout_s=60, what="ollama's breaker open")

        def told_both() -> bool:
            names = {n for p in oncall.payloads() for n in alert_names(p)}
            return {"CircuitOpen", "ComponentUnhealthy"} <= names

        wait_for(told_both, timeout_s=90, what="ollama's alerts delivered firing")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()
    last = oncall.payloads()[-1]
    assert last["status"] == "firing"
    return {a["fingerprint"]: a["startsAt"] for a in last["alerts"] if a["status"] == "firing"}


@pytest.fixture
def oncall() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_restart_after_the_incident_ended_sends_one_resolved(
    tmp_path: Path, ollama: FakeOllama, oncall: WebhookServer
) -> None:
    """Firing told, daemon stopped (SIGTERM), Ollama back, daemon started again: the
    receiver gets exactly one resolved notification for the alerts, no second firing."""
    env = restart_env(tmp_path, ollama, oncall)
    told = told_firing_then_stopped(tmp_path, env, ollama, oncall)
    before = len(oncall.requests)
    ollama.restart()
    daemon = Daemon(env, tmp_path / "second.log")
    try:
        daemon.start()
        wait_for(
            lambda: len(oncall.requests) > before, timeout_s=120, what="the resolved notification"
        )
        # A second notification (a firing, another resolved) would come within a group
        # interval and a settle time.
        time.sleep(5 + 5 + 2)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()
    seen: set[str] = set()
    payloads = [accept(r, ONCALL_SECRET, seen) for r in oncall.requests]
    (resolved,) = payloads[before:]
    assert resolved["status"] == "resolved"
    assert {a["fingerprint"]: a["startsAt"] for a in resolved["alerts"]} == told
    assert all(a["status"] == "resolved" for a in resolved["alerts"])
    assert all(a["endsAt"] > a["startsAt"] for a in resolved["alerts"])


def test_restart_during_the_incident_sends_no_second_firing(
    tmp_path: Path, ollama: FakeOllama, oncall: WebhookServer
) -> None:
    """Firing told, daemon restarted while Ollama is still down: nothing is sent while the
    incident lasts (no second firing); Ollama back, one resolved notification."""
    env = restart_env(tmp_path, ollama, oncall)
    told = told_firing_then_stopped(tmp_path, env, ollama, oncall)
    before = len(oncall.requests)
    daemon = Daemon(env, tmp_path / "second.log")
    try:
        daemon.start()
        wait_for(lambda: breaker_open(daemon), timeout_s=60, what="ollama's breaker open again")
        # The restore grace (30 s), a settle time and a group interval: a restored alert
        # that was not fired again would be resolved by now, a new firing sent.
        time.sleep(30 + 5 + 5 + 2)
        assert len(oncall.requests) == before, oncall.payloads()[before:]
        ollama.restart()
        wait_for(
            lambda: len(oncall.requests) > before, timeout_s=120, what="the resolved notification"
        )
        time.sleep(5 + 5 + 2)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()
    seen: set[str] = set()
    payloads = [accept(r, ONCALL_SECRET, seen) for r in oncall.requests]
    (resolved,) = payloads[before:]
    assert resolved["status"] == "resolved"
    assert {a["fingerprint"]: a["startsAt"] for a in resolved["alerts"]} == told
