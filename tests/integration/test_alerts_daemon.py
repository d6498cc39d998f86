"""One incident through the real daemon: Ollama stops, then comes back — the receiver gets
exactly one firing and one resolved notification for it, signed and in Alertmanager's shape."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from biomem.alerts import verify_signature
from tests.conftest import SAMPLES, cli_env, run_cli
from tests.fakes.ollama import FakeOllama

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "receiver-shared-secret-0123456789"


class Receiver:
    """A webhook receiver on loopback that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def ollama_notifications(receiver: Receiver, status: str) -> list[dict[str, Any]]:
    """Alerts about ollama being unhealthy with ``status``, across all notifications."""
    return [
        alert
        for payload in receiver.payloads()
        for alert in payload["alerts"]
        if alert["labels"].get("component") == "ollama"
        and alert["labels"].get("alertname") == "ComponentUnhealthy"
        and alert["status"] == status
    ]


def wait_for(predicate: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def test_one_incident_one_firing_one_resolved(receiver: Receiver, tmp_path: Path) -> None:
    """Stop the fake Ollama, then start it: one firing and one resolved notification."""
    ollama = FakeOllama()
    ollama.start()
    env = {
        "OLLAMA_URL": ollama.url,
        "HEALTH_ALERT_WEBHOOK_URL": receiver.url,
        "ALERT_WEBHOOK_SECRET": SECRET,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "ALERT_GROUP_WAIT": "1s",
        "ALERT_GROUP_INTERVAL": "1s",
        "ALERT_RESOLVE_SETTLE": "2s",
    }
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run"],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # healthy checks first: there is nothing to alert about yet
        assert ollama_notifications(receiver, "firing") == []
        ollama.refuse()  # the incident starts
        wait_for(lambda: ollama_notifications(receiver, "firing"))
        ollama.restart()  # and ends
        wait_for(lambda: ollama_notifications(receiver, "resolved"))
        time.sleep(3)  # anything extra would arrive now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        ollama.stop()
    assert proc.returncode == 0
    # Group updates re-list alerts still firing (Alertmanager does the same); the
    # incident itself is announced once: one start, one resolution.
    firing = ollama_notifications(receiver, "firing")
    assert len({alert["startsAt"] for alert in firing}) == 1
    assert len({alert["fingerprint"] for alert in firing}) == 1
    assert len(ollama_notifications(receiver, "resolved")) == 1
    keys = [headers["idempotency-key"] for headers, _ in receiver.requests]
    assert len(keys) == len(set(keys))
    for headers, body in receiver.requests:
        assert verify_signature(
            SECRET,
            headers["x-biomem-timestamp"],
            body,
            headers["x-biomem-signature"],
            now=datetime.now(UTC).timestamp(),
        )
        payload = json.loads(body)
        assert payload["version"] == "4"
        for key in (
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ):
            assert key in payload
        for alert in payload["alerts"]:
            assert set(alert) >= {
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint",
            }
