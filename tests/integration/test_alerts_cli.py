"""`biomem alerts list|silence|unsilence`: on the store when no daemon runs, over the
daemon's HTTP API while one holds the store — and a silence really mutes the daemon's alerts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES, cli_env, run_cli
from tests.fakes.ollama import FakeOllama
from tests.support.alert_rig import WebhookServer

pytestmark = pytest.mark.integration

TOKEN = "cli-token-0123456789abc"


def cli_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.3)


def test_without_a_daemon_silences_live_in_the_store() -> None:
    """No daemon: silence, list and unsilence work on the store file directly."""
    made = cli_json(
        "alerts",
        "silence",
        "component=duckdb",
        "alertname=~Component.*",
        "--duration",
        "1h",
        "--comment",
        "disk swap",
        "--created-by",
        "bob",
    )
    assert made["matchers"] == {"component": "duckdb", "alertname": "=~Component.*"}
    listed = cli_json("alerts", "list")
    assert listed["source"] == "store"
    assert [(s["id"], s["createdBy"], s["comment"]) for s in listed["silences"]] == [
        (made["id"], "bob", "disk swap")
    ]
    assert (listed["active"], listed["notifications"]) == ([], [])
    text = run_cli("alerts", "list")
    assert text.returncode == 0
    assert made["id"] in text.stdout
    assert "active alerts are known only to a running daemon" in text.stdout
    ended = run_cli("alerts", "unsilence", made["id"])
    assert (ended.returncode, ended.stdout.split()[:2]) == (0, ["ended", made["id"]])
    again = run_cli("alerts", "unsilence", made["id"])
    assert again.returncode == 1
    assert f"no active silence {made['id']}" in again.stderr
    assert cli_json("alerts", "list")["silences"] == []


def test_nothing_listening_on_the_health_port_means_the_store() -> None:
    """HTTP endpoints on, but no daemon answers at the port: the store is used."""
    env = {"HEALTH_HTTP_ENDPOINTS": "true", "HEALTH_HTTP_PORT": str(free_port())}
    made = cli_json("alerts", "silence", "component=ollama", env=env)
    assert cli_json("alerts", "list", env=env)["silences"][0]["id"] == made["id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["component"], "write label=value", id="no-equals"),
        pytest.param(["component=~("], "bad regular expression", id="bad-regex"),
        pytest.param(["bad label=x"], "is not a label name", id="bad-label"),
        pytest.param(["component=x", "--duration", "soon"], "duration", id="bad-duration"),
        pytest.param(
            ["component=x", "--until", "2001-01-01T00:00:00Z"], "in the future", id="past"
        ),
    ],
)
def test_bad_silences_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    """A malformed silence stops with exit 2 and one line saying why; nothing is stored."""
    result = run_cli("alerts", "silence", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert cli_json("alerts", "list")["silences"] == []


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ollama_alerts(receiver: WebhookServer, status: str) -> list[dict[str, Any]]:
    return [
        alert
        for payload in receiver.payloads()
        for alert in payload["alerts"]
        if alert["labels"].get("component") == "ollama"
        and alert["labels"].get("alertname") == "ComponentUnhealthy"
        and alert["status"] == status
    ]


@pytest.mark.slow
def test_with_a_daemon_the_cli_talks_http_and_a_silence_mutes(
    receiver: WebhookServer, tmp_path: Path
) -> None:
    """While the daemon holds the store, the CLI silences over HTTP; the silence mutes the
    incident until it is lifted, then the receiver is told (a stored silence is loaded too)."""
    ollama = FakeOllama()
    ollama.start()
    port = free_port()
    env = {
        "OLLAMA_URL": ollama.url,
        "HEALTH_ALERT_WEBHOOK_URL": receiver.url,
        "HEALTH_HTTP_ENDPOINTS": "true",
        "HEALTH_HTTP_PORT": str(port),
        "HEALTH_API_TOKEN": TOKEN,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
        "ALERT_GROUP_WAIT": "1s",
        "ALERT_GROUP_INTERVAL": "1s",
        "ALERT_RESOLVE_SETTLE": "2s",
    }
    assert run_cli("ingest", str(SAMPLES), env=env).returncode == 0
    stored = cli_json("alerts", "silence", "component=postgresql", env=env)  # before the daemon
    daemon = subprocess.Popen(
        [sys.executable, "-m", "biomem", "run"],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/livez", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up)
        made = cli_json("alerts", "silence", "component=ollama", "--duration", "1h", env=env)
        listed = cli_json("alerts", "list", env=env)
        assert listed["source"] == "daemon"
        assert {s["id"] for s in listed["silences"]} == {made["id"], stored["id"]}

        ollama.refuse()  # the incident starts, silenced

        def suppressed() -> bool:
            active = cli_json("alerts", "list", env=env)["active"]
            return any(
                a["labels"].get("component") == "ollama" and a["state"] == "suppressed"
                for a in active
            )

        wait_for(suppressed)
        time.sleep(3)  # group_wait and more: a notification would have gone out by now
        assert ollama_alerts(receiver, "firing") == []
        ended = run_cli("alerts", "unsilence", made["id"], env=env)
        assert ended.returncode == 0, ended.stderr
        wait_for(lambda: bool(ollama_alerts(receiver, "firing")))
        ollama.restart()
        wait_for(lambda: bool(ollama_alerts(receiver, "resolved")))
        metrics = httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ).text
        assert 'biomem_alert_notifications_total{receiver="default",result="sent"}' in metrics
        assert "biomem_alert_notifications_pending 0.0" in metrics
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        ollama.stop()
    assert daemon.returncode == 0
    # The daemon is gone: the store answers again, with the silence ended over HTTP.
    assert [s["id"] for s in cli_json("alerts", "list", env=env)["silences"]] == [stored["id"]]
