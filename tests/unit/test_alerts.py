"""Alert manager lifecycle, grouping, silences, payload, redaction, signing and delivery."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from biomem.alerts import (
    AlertAdapters,
    AlertManager,
    NotificationStatus,
    Outbox,
    Receiver,
    WebhookDeliverer,
    fingerprint,
    sign,
    verify_signature,
)
from biomem.health.model import Status, StatusTransition
from biomem.resilience.breaker import BreakerState, StateTransition
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import DatabaseUnavailable
from biomem.store import DuckDBStore

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
DOWN = {"alertname": "ComponentUnhealthy", "component": "duckdb", "severity": "error"}


@dataclass
class Env:
    clock: FakeClock
    outbox: Outbox
    manager: AlertManager
    receivers: list[Receiver] = field(default_factory=list)

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.clock.monotonic())

    def run(self, seconds: float, step: float = 1.0) -> None:
        """Let ``seconds`` pass, ticking every ``step`` as the daemon would."""
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step
            self.manager.tick()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(n.payload) for n in self.outbox.list()]


@pytest.fixture
def env(store: DuckDBStore) -> Iterator[Env]:
    clock = FakeClock(1000.0)
    outbox = Outbox(store)
    outbox.ensure_schema()
    receivers = [Receiver(name="ops", url="http://127.0.0.1:9/hook", secret="s3cret")]
    holder: list[Env] = []
    manager = AlertManager(
        clock=clock,
        wall_clock=lambda: holder[0].wall(),
        outbox=outbox,
        receivers=receivers,
        group_wait_s=10,
        repeat_interval_s=3600,
        resolve_settle_s=30,
        external_url="http://biomem.local:8080",
    )
    holder.append(Env(clock, outbox, manager, receivers))
    yield holder[0]


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


def test_still_firing_repeats_after_repeat_interval(env: Env) -> None:
    """An alert still firing is notified again once per repeat interval."""
    env.manager.fire(DOWN)
    env.run(10)
    env.run(3600 - 10, step=10)
    assert len(env.outbox.list()) == 1
    env.run(3600 + 20, step=10)
    assert [p["status"] for p in env.payloads()] == ["firing", "firing", "firing"]


def test_silenced_alert_is_not_notified_until_silence_ends(env: Env) -> None:
    """A matching silence suppresses notifications; after it ends the alert is notified."""
    sid = env.manager.silence({"component": "=~duck.*"}, until=env.wall() + timedelta(minutes=5))
    env.manager.fire(DOWN)
    env.run(120)
    assert env.outbox.list() == []
    assert env.manager.snapshot()["active"][0]["state"] == "suppressed"
    env.manager.unsilence(sid)
    env.run(9)
    assert env.outbox.list() == []
    env.run(2)
    assert len(env.outbox.list()) == 1


def test_silence_expires_by_itself(env: Env) -> None:
    """A silence stops muting at its end time."""
    env.manager.silence(
        {"alertname": "ComponentUnhealthy"}, until=env.wall() + timedelta(seconds=60)
    )
    env.manager.fire(DOWN)
    env.run(60)
    assert env.outbox.list() == []
    env.run(11)
    assert len(env.outbox.list()) == 1
    assert env.manager.silences() == []


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
    assert datetime.fromisoformat(alert["startsAt"]) == EPOCH + timedelta(seconds=1000)
    assert alert["fingerprint"] == fingerprint(DOWN)


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({"password": "hunter2-planted"}, id="secret-key"),
        pytest.param({"description": "connect failed: password=hunter2-planted"}, id="in-text"),
        pytest.param({"dsn": "postgresql://u:hunter2-planted@db/x"}, id="url"),
    ],
)
def test_planted_secret_never_reaches_the_payload(env: Env, annotations: dict[str, str]) -> None:
    """A password in an annotation is masked before it is stored or sent."""
    env.manager.fire(DOWN, annotations)
    env.run(10)
    (note,) = env.outbox.list()
    assert "hunter2-planted" not in note.payload
    assert "hunter2-planted" not in json.dumps(env.manager.snapshot())


def test_signature_verifies_and_rejects_tampering_and_replay() -> None:
    """A fresh signature verifies; a changed body, wrong secret or old timestamp does not."""
    body = b'{"version":"4"}'
    signature = sign("s3cret", "1700000000", body)
    assert signature.startswith("sha256=")
    assert verify_signature("s3cret", "1700000000", body, signature, now=1700000100)
    assert not verify_signature("s3cret", "1700000000", body + b" ", signature, now=1700000100)
    assert not verify_signature("other", "1700000000", body, signature, now=1700000100)
    assert not verify_signature("s3cret", "1700000000", body, signature, now=1700000301)
    assert not verify_signature("s3cret", "not-a-time", body, signature, now=1700000000)


# --------------------------------------------------------------------------- adapters


def test_health_transitions_fire_and_resolve(env: Env) -> None:
    """Worsening fires the matching alert; healthy again resolves it."""
    adapters = AlertAdapters(env.manager)

    def move(previous: Status, current: Status) -> None:
        adapters.on_health_transition(
            StatusTransition(component="duckdb", previous=previous, current=current, at=env.wall())
        )

    move(Status.HEALTHY, Status.DEGRADED)
    move(Status.DEGRADED, Status.CRITICAL)
    active = env.manager.snapshot()["active"]
    firing = [a["labels"] for a in active if a["status"] == "firing"]
    assert firing == [
        {"alertname": "ComponentUnhealthy", "component": "duckdb", "severity": "critical"}
    ]
    move(Status.CRITICAL, Status.HEALTHY)
    assert all(a["status"] == "resolved" for a in env.manager.snapshot()["active"])


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


# --------------------------------------------------------------------------- delivery


Handler = Callable[[httpx.Request], httpx.Response]


def deliverer_for(env: Env, handler: Handler) -> WebhookDeliverer:
    return WebhookDeliverer(
        env.outbox,
        env.receivers,
        clock=env.clock,
        wall_clock=env.wall,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        max_delay_s=60,
    )


def test_5xx_is_retried_with_capped_backoff_then_delivered(env: Env) -> None:
    """A 503 keeps the notification pending with a later attempt; a 200 delivers it."""
    answers = iter([503, 503, 200])
    deliverer = deliverer_for(env, lambda request: httpx.Response(next(answers)))
    env.manager.fire(DOWN)
    env.run(10)
    assert deliverer.deliver_due().retrying
    (note,) = env.outbox.list()
    assert note.status is NotificationStatus.PENDING
    assert note.last_status_code == 503
    assert env.wall() <= note.next_attempt_at <= env.wall() + timedelta(seconds=60)
    env.clock.advance(61)
    deliverer.deliver_due()
    env.clock.advance(61)
    assert deliverer.deliver_due().delivered == (note.id,)
    assert env.outbox.list()[0].attempts == 3


def test_retry_after_is_honoured(env: Env) -> None:
    """A 429 with Retry-After waits at least that long (capped at max_delay_s)."""
    deliverer = deliverer_for(
        env, lambda request: httpx.Response(429, headers={"Retry-After": "45"})
    )
    env.manager.fire(DOWN)
    env.run(10)
    deliverer.deliver_due()
    (note,) = env.outbox.list()
    assert note.next_attempt_at >= env.wall() + timedelta(seconds=45)


def test_4xx_is_failed_not_retried(env: Env) -> None:
    """A 400 marks the notification failed with its code and redacted body."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, text="bad payload; token=abcdef123456")

    deliverer = deliverer_for(env, handler)
    env.manager.fire(DOWN)
    env.run(10)
    assert deliverer.deliver_due().failed
    env.clock.advance(3600)
    assert deliverer.deliver_due().failed == ()
    (note,) = env.outbox.list()
    assert (note.status, note.last_status_code, len(calls)) == (NotificationStatus.FAILED, 400, 1)
    assert note.last_error is not None and "abcdef123456" not in note.last_error


def test_resolved_waits_for_its_firing(env: Env) -> None:
    """A resolved notification is not sent while the firing one for its alert is pending."""
    sent: list[str] = []
    up = {"ok": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if not up["ok"]:
            return httpx.Response(503)
        sent.append(json.loads(request.content)["status"])
        return httpx.Response(200)

    deliverer = deliverer_for(env, handler)
    env.manager.fire(DOWN)
    env.run(10)
    deliverer.deliver_due()
    env.manager.resolve(DOWN)
    env.run(30)
    env.clock.advance(61)
    assert len(env.outbox.due(env.wall())) == 1  # only the firing one is due
    up["ok"] = True
    report = deliverer.deliver_due()
    assert len(report.delivered) == 2
    assert sent == ["firing", "resolved"]


def test_open_breaker_skips_receiver(env: Env) -> None:
    """While the receiver's breaker is open, its notifications stay pending untouched."""
    deliverer = deliverer_for(env, lambda request: httpx.Response(200))
    deliverer.breaker("ops").transition_to_forced_open()
    env.manager.fire(DOWN)
    env.run(10)
    assert deliverer.deliver_due().skipped
    (note,) = env.outbox.list()
    assert (note.status, note.attempts) == (NotificationStatus.PENDING, 0)
    deliverer.breaker("ops").transition_to_closed()
    assert deliverer.deliver_due().delivered == (note.id,)


def test_signed_headers(env: Env) -> None:
    """Each request carries a verifiable signature and the notification id as idempotency key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    deliverer = deliverer_for(env, handler)
    env.manager.fire(DOWN)
    env.run(10)
    deliverer.deliver_due()
    (request,) = seen
    (note,) = env.outbox.list()
    assert request.headers["Idempotency-Key"] == note.id
    stamp = request.headers["X-Biomem-Timestamp"]
    assert verify_signature(
        "s3cret",
        stamp,
        request.content,
        request.headers["X-Biomem-Signature"],
        now=env.wall().timestamp(),
    )


def test_snapshot_matches_alerts_body(env: Env) -> None:
    """snapshot() has exactly the keys and types /health/alerts expects."""
    from biomem.health.api import AlertsBody

    env.manager.fire(DOWN)
    env.run(10)
    snapshot = env.manager.snapshot()
    assert set(snapshot) == {"active", "recent", "undelivered"}
    assert snapshot["undelivered"] == 1
    AlertsBody.model_validate(snapshot)


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
