"""Alert delivery to a real HTTP receiver on loopback, recording what it gets.

Incidents, grouping, repeats and silences on a fake clock; receiver outages,
refusals, Retry-After, breakers, routing to several receivers, and SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from biomem.alerts import NotificationStatus, Receiver, WebhookDeliverer, verify_signature
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore
from tests.support.alert_rig import DOWN, Env, Received, WebhookServer, make_env

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123"


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Rig:
    env: Env
    deliverer: WebhookDeliverer

    def tick(self, seconds: float, step: float = 1.0) -> None:
        self.env.run(seconds, step)

    def deliver(self) -> None:
        self.deliverer.deliver_due()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Deliver until nothing is pending (backoff in this rig is milliseconds)."""
        outbox = self.env.outbox
        deadline = time.monotonic() + timeout_s
        while outbox.counts()[NotificationStatus.PENDING]:
            assert time.monotonic() < deadline, outbox.list()
            self.deliverer.deliver_due()
            # Backoff and the breakers run on the fake clock: let it move, as a daemon's would.
            self.env.clock.advance(5)


def make_rig(
    store: DuckDBStore,
    receivers: Sequence[Receiver],
    *,
    max_delay_s: float = 0.05,
    epoch: datetime | None = None,
    **options: float,
) -> Rig:
    env = make_env(
        store, receivers=receivers, clock=FakeClock(), epoch=epoch or datetime.now(UTC), **options
    )
    deliverer = WebhookDeliverer(
        env.outbox,
        receivers,
        clock=env.clock,
        wall_clock=env.wall,
        http=httpx.Client(),
        max_delay_s=max_delay_s,
        base_delay_s=min(0.01, max_delay_s),
    )
    return Rig(env, deliverer)


def ops(server: WebhookServer, secret: str = SECRET) -> list[Receiver]:
    return [Receiver(name="ops", url=server.url, secret=secret, timeout_s=2.0)]


def assert_signed(rig: Rig, request: Received, secret: str = SECRET) -> None:
    assert verify_signature(
        secret,
        request.headers["x-biomem-timestamp"],
        request.body,
        request.headers["x-biomem-signature"],
        now=rig.env.wall().timestamp(),
    )


def test_one_incident_sends_one_firing_and_one_resolved(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """Fire then resolve reaches the receiver as exactly one firing and one resolved, signed, v4."""
    rig = make_rig(store, ops(receiver))
    rig.env.manager.fire(DOWN, {"summary": "duckdb down"})
    rig.tick(10)
    rig.drain()
    rig.env.manager.resolve(DOWN)
    rig.tick(40)
    rig.drain()
    assert [p["status"] for p in receiver.payloads()] == ["firing", "resolved"]
    for request in receiver.requests:
        assert_signed(rig, request)
        assert request.payload["version"] == "4"
        assert request.payload["alerts"][0]["labels"] == DOWN
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert len(set(keys)) == 2
    assert set(keys) == {n.id for n in rig.env.outbox.list()}


def test_tampered_or_replayed_requests_do_not_verify(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """What the receiver got verifies only as sent, with the right secret, while fresh."""
    rig = make_rig(store, ops(receiver))
    rig.env.manager.fire(DOWN)
    rig.tick(10)
    rig.drain()
    (request,) = receiver.requests
    stamp, signature = request.headers["x-biomem-timestamp"], request.headers["x-biomem-signature"]
    now = rig.env.wall().timestamp()
    assert verify_signature(SECRET, stamp, request.body, signature, now=now)
    assert not verify_signature(SECRET, stamp, request.body + b" ", signature, now=now)
    assert not verify_signature("another-secret-0123", stamp, request.body, signature, now=now)
    assert not verify_signature(SECRET, stamp, request.body, signature, now=now + 301)


def test_alerts_firing_together_reach_the_receiver_in_one_request(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """Three alerts fired within group_wait arrive as one notification holding all three."""
    rig = make_rig(store, ops(receiver))
    for component in ("duckdb", "postgresql", "ollama"):
        rig.env.manager.fire({**DOWN, "component": component})
        rig.tick(2)
    rig.tick(10)
    rig.drain()
    (payload,) = receiver.payloads()
    assert {a["labels"]["component"] for a in payload["alerts"]} == {
        "duckdb",
        "postgresql",
        "ollama",
    }


def test_still_firing_is_repeated_after_repeat_interval(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """An alert still firing reaches the receiver again once per repeat interval, not before."""
    rig = make_rig(store, ops(receiver), repeat_interval_s=3600)
    rig.env.manager.fire(DOWN)
    rig.tick(10)
    rig.drain()
    rig.tick(3590, step=10)
    rig.drain()
    assert len(receiver.requests) == 1
    rig.tick(20, step=10)
    rig.drain()
    assert [p["status"] for p in receiver.payloads()] == ["firing", "firing"]
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 2


def test_silence_suppresses_until_it_ends(store: DuckDBStore, receiver: WebhookServer) -> None:
    """A silenced alert reaches the receiver only after the silence has ended."""
    rig = make_rig(store, ops(receiver))
    rig.env.manager.silence({"component": "duckdb"}, ends_at=rig.env.wall() + timedelta(minutes=10))
    rig.env.manager.fire(DOWN)
    rig.tick(590, step=10)
    rig.drain()
    assert receiver.attempts == []
    rig.tick(30)
    rig.drain()
    assert [p["status"] for p in receiver.payloads()] == ["firing"]


def test_receiver_down_then_up_delivers_everything_once_in_order(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """Two incidents while the receiver is stopped (the same alert twice, and another alert
    in the second) arrive once it is back: each notification once, as stored, in order."""
    rig = make_rig(store, ops(receiver))
    receiver.stop()
    breaker = {"alertname": "CircuitOpen", "component": "postgresql", "severity": "error"}
    dead = {"alertname": "DeadLetterDead", "component": "postgresql", "severity": "error"}
    for incident in (1, 2):
        rig.env.manager.fire(breaker)
        if incident == 2:
            rig.env.manager.fire(dead)  # only a person resolves it
        rig.tick(10)
        rig.deliver()  # refused: nothing listens
        rig.env.manager.resolve(breaker)
        rig.tick(31)
        rig.deliver()
    waiting = rig.env.outbox.list()
    assert [n.status for n in waiting] == [NotificationStatus.PENDING] * 5
    assert any(n.attempts > 0 for n in waiting)
    assert receiver.attempts == []
    receiver.start()  # the same port again
    rig.drain()
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert len(keys) == len(set(keys)) == 5
    stored = {n.id: n for n in rig.env.outbox.list()}
    assert set(keys) == set(stored)
    heard: dict[str, list[tuple[str, str]]] = {}
    for request in receiver.requests:
        assert_signed(rig, request)
        note = stored[request.headers["idempotency-key"]]
        assert request.body == note.payload.encode("utf-8")  # byte for byte as enqueued
        assert note.status is NotificationStatus.DELIVERED
        for alert in request.payload["alerts"]:
            name = alert["labels"]["alertname"]
            heard.setdefault(name, []).append((alert["status"], alert["startsAt"]))
    first, second = heard["CircuitOpen"][0][1], heard["CircuitOpen"][2][1]
    assert first < second
    assert heard == {
        "CircuitOpen": [
            ("firing", first),
            ("resolved", first),
            ("firing", second),
            ("resolved", second),
        ],
        "DeadLetterDead": [("firing", heard["DeadLetterDead"][0][1])],
    }


def test_5xx_is_retried_with_capped_backoff_then_delivered(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """A 503 keeps the notification pending with a later attempt; a 200 delivers it."""
    rig = make_rig(store, ops(receiver), max_delay_s=60)
    receiver.answers = [503, 503]
    rig.env.manager.fire(DOWN)
    rig.tick(10)
    assert rig.deliverer.deliver_due().retrying
    (note,) = rig.env.outbox.list()
    assert (note.status, note.last_status_code) == (NotificationStatus.PENDING, 503)
    wall = rig.env.wall()
    assert wall <= note.next_attempt_at <= wall + timedelta(seconds=60)
    rig.env.clock.advance(61)
    rig.deliver()
    rig.env.clock.advance(61)
    assert rig.deliverer.deliver_due().delivered == (note.id,)
    assert rig.env.outbox.list()[0].attempts == 3
    assert len(receiver.attempts) == 3
    assert {r.headers["idempotency-key"] for r in receiver.attempts} == {note.id}


def test_retry_after_is_honoured(store: DuckDBStore, receiver: WebhookServer) -> None:
    """A 429 with Retry-After waits at least that long (capped at max_delay_s)."""
    rig = make_rig(store, ops(receiver), max_delay_s=300)
    receiver.answers = [429]
    receiver.reply_headers = {"Retry-After": "45"}
    rig.env.manager.fire(DOWN)
    rig.tick(10)
    rig.deliver()
    (note,) = rig.env.outbox.list()
    assert note.next_attempt_at >= rig.env.wall() + timedelta(seconds=45)


def test_400_is_recorded_failed_and_not_retried(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """A receiver answering 400 gets one attempt; the row is failed with its code, redacted."""
    rig = make_rig(store, ops(receiver))
    receiver.code = 400
    receiver.reply_text = "bad payload; token=abcdef123456"
    rig.env.manager.fire({"alertname": "Bad", "severity": "info"})
    rig.tick(10)
    assert rig.deliverer.deliver_due().failed
    rig.env.clock.advance(3600)
    assert rig.deliverer.deliver_due().failed == ()
    (note,) = rig.env.outbox.list()
    assert (note.status, note.last_status_code, note.attempts) == (
        NotificationStatus.FAILED,
        400,
        1,
    )
    assert len(receiver.attempts) == 1
    assert note.last_error is not None and "abcdef123456" not in note.last_error


def test_open_breaker_leaves_notifications_pending(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """While the receiver's breaker is open, its notifications stay pending, untouched."""
    rig = make_rig(store, ops(receiver))
    rig.deliverer.breaker("ops").transition_to_forced_open()
    rig.env.manager.fire(DOWN)
    rig.tick(10)
    assert rig.deliverer.deliver_due().skipped
    (note,) = rig.env.outbox.list()
    assert (note.status, note.attempts, receiver.attempts) == (NotificationStatus.PENDING, 0, [])
    rig.deliverer.breaker("ops").transition_to_closed()
    assert rig.deliverer.deliver_due().delivered == (note.id,)


def test_several_receivers_each_get_their_routed_alerts_signed_with_their_secret(
    store: DuckDBStore,
) -> None:
    """Routing by matchers; each receiver verifies with its own secret; attempts are counted."""
    everyone, pager = WebhookServer(), WebhookServer()
    everyone.start()
    pager.start()
    try:
        receivers = [
            Receiver(name="default", url=everyone.url, secret="default-secret-0123"),
            Receiver(
                name="pager",
                url=pager.url,
                secret="pager-secret-01234",
                matchers={"severity": "critical"},
            ),
        ]
        rig = make_rig(store, receivers)
        rig.env.manager.fire(DOWN)
        rig.env.manager.fire({**DOWN, "component": "ollama", "severity": "critical"})
        rig.tick(10)
        rig.drain()
        (all_of_them,) = everyone.payloads()
        (critical,) = pager.payloads()
        assert len(all_of_them["alerts"]) == 2
        assert [a["labels"]["component"] for a in critical["alerts"]] == ["ollama"]
        assert critical["receiver"] == "pager"
        assert_signed(rig, everyone.requests[0], "default-secret-0123")
        assert_signed(rig, pager.requests[0], "pager-secret-01234")
        assert rig.deliverer.attempts() == {
            ("default", "sent"): 1,
            ("default", "failed"): 0,
            ("pager", "sent"): 1,
            ("pager", "failed"): 0,
        }
    finally:
        everyone.stop()
        pager.stop()


_CHILD = """
import sys, time
from pathlib import Path
from datetime import UTC, datetime
from biomem.alerts import AlertManager, Outbox, Receiver
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore

store = DuckDBStore.open(Path(sys.argv[1]))
outbox = Outbox(store)
outbox.ensure_schema()
clock = FakeClock()
manager = AlertManager(
    clock=clock, wall_clock=lambda: datetime.now(UTC), outbox=outbox,
    receivers=[Receiver(name="ops", url=sys.argv[2], secret="integration-secret-0123")],
    group_wait_s=0,
)
for name in ("A", "B", "C"):
    manager.fire({"alertname": name, "severity": "warning"})
print("ENQUEUED", manager.tick(), flush=True)
time.sleep(600)  # killed here, before anything is delivered
"""


def test_sigkill_before_delivery_loses_and_duplicates_nothing(
    store_path: Path, receiver: WebhookServer
) -> None:
    """Notifications enqueued by a SIGKILLed process are each delivered once after reopening."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store_path), receiver.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = ""
        while not line.startswith("ENQUEUED"):  # structlog writes to stdout too
            line = child.stdout.readline()
            assert line, "the child exited before enqueuing"
        enqueued = int(line.split()[1])
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert enqueued == 3
    with DuckDBStore.open(store_path) as store:
        rig = make_rig(store, ops(receiver))
        rig.drain()
        rig.deliver()
        keys = [r.headers["idempotency-key"] for r in receiver.requests]
        assert len(keys) == len(set(keys)) == enqueued
        assert {r.payload["commonLabels"]["alertname"] for r in receiver.requests} == {
            "A",
            "B",
            "C",
        }
        counts = rig.env.outbox.counts()
        assert counts[NotificationStatus.DELIVERED] == enqueued
        assert counts[NotificationStatus.PENDING] == 0
