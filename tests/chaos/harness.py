"""The running parts of a chaos scenario: the real daemon, a health watcher, a webhook receiver.

:class:`Daemon` starts ``biomem run`` as a subprocess with its health endpoints
on a free loopback port and its JSON log in a file. :class:`Watcher` polls
``/health/detailed`` a few times a second from a thread and keeps every
sample and every run it saw, so a scenario can measure when a status changed
and wait for the pipeline to settle without ever reading the store while the
daemon holds it. :class:`Receiver` is a real webhook receiver that may start
late on a port chosen in advance.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import cli_env

__all__ = [
    "Daemon",
    "Receiver",
    "Sample",
    "Watcher",
    "free_port",
    "wait_for",
]

POLL_S = 0.3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float, what: str, poll_s: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


class Daemon:
    """``biomem run`` in a subprocess, its health API on a free port, its log in a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {
            **env,
            "HEALTH_HTTP_ENDPOINTS": "true",
            "HEALTH_HTTP_HOST": "127.0.0.1",
            "HEALTH_HTTP_PORT": str(self.port),
            "BIOMEM_LOG_FORMAT": "json",
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=5)

    def start(self, *, wait: bool = True, timeout_s: float = 60) -> None:
        """Start the daemon; with ``wait``, return once /livez answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "biomem", "run"],
                env=cli_env(self.env),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            wait_for(self.live, timeout_s=timeout_s, what="the daemon's /livez")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def live(self) -> bool:
        if not self.running:
            raise AssertionError(f"the daemon exited early:\n{self.log_tail()}")
        response = self.get("/livez")
        return response is not None and response.status_code == 200

    def get(self, path: str) -> httpx.Response | None:
        """GET ``path``; None when nothing answers (down, refused, timed out)."""
        try:
            return self._http.get(self.base + path)
        except httpx.HTTPError:
            return None

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(
                f"the daemon did not stop within {timeout_s:g} s of SIGTERM:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Make sure nothing is left running (teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._http.close()

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines, parsed (other lines skipped)."""
        events = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at /health/detailed (``up`` False when nothing answered)."""

    t: float  # time.monotonic()
    up: bool
    status: str | None = None  # pass / warn / fail
    components: Mapping[str, str] = field(default_factory=dict)  # name -> internal status
    outputs: Mapping[str, str | None] = field(default_factory=dict)
    breakers: Mapping[str, str] = field(default_factory=dict)  # name -> state
    dead_letters: Mapping[str, int] = field(default_factory=dict)  # status -> count
    # "component:measurement" of every measurement reported not healthy
    warnings: frozenset[str] = frozenset()

    def healthy(self, component: str) -> bool:
        """The component is healthy and its breaker (if any) closed."""
        return (
            self.up
            and self.components.get(component) == "healthy"
            and self.breakers.get(component, "closed") == "closed"
        )

    def troubled(self, component: str) -> bool:
        """The component is reported not healthy, or its breaker is not closed."""
        status = self.components.get(component)
        breaker = self.breakers.get(component, "closed")
        return self.up and (status not in ("healthy", "unknown", None) or breaker != "closed")


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


class Watcher:
    """Polls the daemon's /health/detailed from a thread; keeps samples and runs."""

    def __init__(self, daemon: Daemon, poll_s: float = POLL_S) -> None:
        self.daemon = daemon
        self.poll_s = poll_s
        self.samples: list[Sample] = []
        self.runs: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (idempotent); the samples and runs stay."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.poll_s)

    def poll(self) -> Sample:
        """Take one sample now (also called by the loop)."""
        response = self.daemon.get("/health/detailed")
        now = time.monotonic()
        if response is None or response.status_code not in (200, 503):
            sample = Sample(t=now, up=False)
        else:
            body = response.json()
            comps = body.get("components", {})
            sample = Sample(
                t=now,
                up=True,
                status=body.get("status"),
                components={name: c["status"] for name, c in comps.items()},
                outputs={name: c.get("output") for name, c in comps.items()},
                breakers={b["name"]: b["state"] for b in body.get("breakers", [])},
                dead_letters=dict(body.get("dead_letters", {}).get("counts", {})),
                warnings=frozenset(
                    f"{name}:{m['name']}"
                    for name, c in comps.items()
                    for m in c.get("measurements", [])
                    if m.get("status") not in ("healthy", "unknown")
                ),
            )
            with self._lock:
                for run in body.get("runs", {}).get("last", []):
                    self.runs[int(run["id"])] = run
        with self._lock:
            self.samples.append(sample)
        return sample

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def first(self, predicate: Callable[[Sample], bool], *, after: float) -> Sample | None:
        """The first sample at or after ``after`` for which ``predicate`` holds."""
        return next((s for s in self.snapshot() if s.t >= after and predicate(s)), None)

    def holds_since(self, predicate: Callable[[Sample], bool], *, after: float) -> Sample | None:
        """The sample from which ``predicate`` held in every later sample (after ``after``)."""
        since: Sample | None = None
        for sample in self.snapshot():
            if sample.t < after:
                continue
            since = (since or sample) if predicate(sample) else None
        return since

    def stage_runs(self, stage: str) -> list[dict[str, Any]]:
        """Every run of ``stage`` seen so far, oldest first, counts decoded."""
        with self._lock:
            runs = [dict(r) for r in self.runs.values() if r["stage"] == stage]
        for run in runs:
            if isinstance(run.get("counts"), str):
                run["counts"] = json.loads(run["counts"])
            run["started"] = _parse_time(run.get("started_at"))
            run["finished"] = _parse_time(run.get("finished_at"))
        return sorted(runs, key=lambda r: int(r["id"]))

    def clean_run(
        self, stage: str, *, started_after: datetime, llm: bool = True
    ) -> dict[str, Any] | None:
        """The first run of ``stage`` started after the time that succeeded with nothing left:
        no fallback, nothing deferred, the LLM available (when ``llm``)."""
        for run in self.stage_runs(stage):
            counts = run.get("counts") or {}
            if run["started"] is None or run["started"] < started_after:
                continue
            if run["status"] != "succeeded":
                continue
            if counts.get("deferred") or (llm and counts.get("fallback")):
                continue
            if llm and counts.get("llm_unavailable"):
                continue
            return run
        return None

    def component_history(self, component: str) -> list[tuple[float, str]]:
        """(time, status) each time the component's reported status changed."""
        changes: list[tuple[float, str]] = []
        for sample in self.snapshot():
            status = sample.components.get(component) if sample.up else "down"
            if status is not None and (not changes or changes[-1][1] != status):
                changes.append((sample.t, status))
        return changes


class Receiver:
    """A webhook receiver on loopback recording every POST; may start late on a fixed port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                received.append((time.monotonic(), headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def alerts(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, alert) for every alert in every notification, in arrival order."""
        return [
            (at, alert) for at, _, body in self.requests for alert in json.loads(body)["alerts"]
        ]

    def about(self, component: str, status: str | None = None) -> list[dict[str, Any]]:
        """Alerts naming ``component`` (with ``status`` firing/resolved when given)."""
        return [
            alert
            for _, alert in self.alerts()
            if alert["labels"].get("component") == component
            and (status is None or alert["status"] == status)
        ]

    def first_arrival(self, component: str, status: str) -> float | None:
        return next(
            (
                at
                for at, alert in self.alerts()
                if alert["labels"].get("component") == component and alert["status"] == status
            ),
            None,
        )
