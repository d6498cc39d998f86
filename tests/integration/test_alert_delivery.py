"""Alert delivery to a real HTTP receiver on loopback: incidents, outages, refusals, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from biomem.alerts import (
    AlertManager,
    NotificationStatus,
    Outbox,
    Receiver,
    WebhookDeliverer,
    verify_signature,
)
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore

pytestmark = pytest.mark.integration

SECRET = "integration-secret"


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class WebhookServer:
    """A webhook receiver on a loopback port: records requests; answers ``code``; can stop."""

    def __init__(self) -> None:
        self.code = 200
        self.requests: list[Received] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code = owner.code
                if code == 200:
                    owner.requests.append(Received(dict(self.headers.items()), body))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Rig:
    clock: FakeClock
    outbox: Outbox
    manager: AlertManager
    deliverer: WebhookDeliverer

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.manager.tick()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Deliver until nothing is pending (backoff in this rig is milliseconds)."""
        deadline = time.monotonic() + timeout_s
        while self.outbox.counts()[NotificationStatus.PENDING]:
            assert time.monotonic() < deadline, self.outbox.list()
            self.deliverer.deliver_due()
            time.sleep(0.02)
            # The breakers run on the fake clock: let it move, as a daemon's time would.
            self.clock.advance(5)


def make_rig(store: DuckDBStore, receiver: WebhookServer) -> Rig:
    clock = FakeClock()
    outbox = Outbox(store)
    outbox.ensure_schema()
    receivers = [Receiver(name="ops", url=receiver.url, secret=SECRET, timeout_s=2.0)]
    manager = AlertManager(
        clock=clock, wall_clock=utc_now, outbox=outbox, receivers=receivers, group_wait_s=10
    )
    deliverer = WebhookDeliverer(
        outbox,
        receivers,
        clock=clock,
        wall_clock=utc_now,
        http=httpx.Client(),
        max_delay_s=0.05,
        base_delay_s=0.01,
    )
    return Rig(clock, outbox, manager, deliverer)


def assert_signed(request: Received) -> None:
    assert verify_signature(
        SECRET,
        request.headers["X-Biomem-Timestamp"],
        request.body,
        request.headers["X-Biomem-Signature"],
        now=time.time(),
    )


def test_one_incident_sends_one_firing_and_one_resolved(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """Fire then resolve reaches the receiver as exactly one firing and one resolved, signed, v4."""
    rig = make_rig(store, receiver)
    labels = {"alertname": "ComponentUnhealthy", "component": "duckdb", "severity": "error"}
    rig.manager.fire(labels, {"summary": "duckdb down"})
    rig.tick(10)
    rig.drain()
    rig.manager.resolve(labels)
    for _ in range(40):
        rig.tick(1)
    rig.drain()
    assert [r.payload["status"] for r in receiver.requests] == ["firing", "resolved"]
    for request in receiver.requests:
        assert_signed(request)
        assert request.payload["version"] == "4"
        assert request.payload["alerts"][0]["labels"] == labels
    assert len({r.headers["Idempotency-Key"] for r in receiver.requests}) == 2


def test_receiver_down_then_up_delivers_everything_once_in_order(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """Two incidents while the receiver is stopped arrive once it is back: once each, in order."""
    rig = make_rig(store, receiver)
    receiver.stop()
    first = {"alertname": "CircuitOpen", "component": "postgresql", "severity": "error"}
    second = {"alertname": "DeadLetterDead", "component": "postgresql", "severity": "error"}
    for labels in (first, second):
        rig.manager.fire(labels)
        rig.tick(10)
        rig.deliverer.deliver_due()
        rig.manager.resolve(labels)
        rig.tick(31)
        rig.deliverer.deliver_due()
    assert rig.outbox.counts()[NotificationStatus.PENDING] == 4
    assert any(n.attempts > 0 for n in rig.outbox.list())
    receiver.start()  # the same port again
    rig.drain()
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert len(keys) == len(set(keys)) == 4
    by_alert: dict[str, list[str]] = {}
    for request in receiver.requests:
        assert_signed(request)
        name = request.payload["commonLabels"]["alertname"]
        by_alert.setdefault(name, []).append(request.payload["status"])
    assert by_alert == {
        "CircuitOpen": ["firing", "resolved"],
        "DeadLetterDead": ["firing", "resolved"],
    }


def test_400_is_recorded_failed_and_not_retried(
    store: DuckDBStore, receiver: WebhookServer
) -> None:
    """A receiver answering 400 gets one attempt; the row is failed with the code."""
    rig = make_rig(store, receiver)
    receiver.code = 400
    rig.manager.fire({"alertname": "Bad", "severity": "info"})
    rig.tick(10)
    assert rig.deliverer.deliver_due().failed
    time.sleep(0.1)
    assert rig.deliverer.deliver_due().failed == ()
    (note,) = rig.outbox.list()
    assert (note.status, note.last_status_code, note.attempts) == (
        NotificationStatus.FAILED,
        400,
        1,
    )


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
    receivers=[Receiver(name="ops", url=sys.argv[2], secret="integration-secret")],
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
        rig = make_rig(store, receiver)
        rig.drain()
        rig.deliverer.deliver_due()
        keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
        assert len(keys) == len(set(keys)) == enqueued
        assert {r.payload["commonLabels"]["alertname"] for r in receiver.requests} == {
            "A",
            "B",
            "C",
        }
        counts = rig.outbox.counts()
        assert counts[NotificationStatus.DELIVERED] == enqueued
        assert counts[NotificationStatus.PENDING] == 0
