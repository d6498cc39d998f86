"""Alert tests' rig: a manager over a real outbox on a fake clock, and a loopback receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from biomem.alerts import AlertManager, Outbox, Receiver, SilenceStore
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
DOWN = {"alertname": "ComponentUnhealthy", "component": "duckdb", "severity": "error"}


@dataclass
class Env:
    """A manager whose wall clock is EPOCH + the fake monotonic clock."""

    clock: FakeClock
    outbox: Outbox
    manager: AlertManager
    receivers: list[Receiver] = field(default_factory=list)
    silences: SilenceStore | None = None
    epoch: datetime = EPOCH  # the wall time at fake-clock zero

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.clock.monotonic())

    def run(self, seconds: float, step: float = 1.0) -> None:
        """Let ``seconds`` pass, ticking every ``step`` as the daemon would."""
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step
            self.manager.tick()

    def payloads(self, receiver: str | None = None) -> list[dict[str, Any]]:
        return [
            json.loads(n.payload)
            for n in self.outbox.list()
            if receiver is None or n.receiver == receiver
        ]


def make_env(
    store: DuckDBStore,
    *,
    receivers: Sequence[Receiver] | None = None,
    clock: FakeClock | None = None,
    epoch: datetime = EPOCH,
    **options: Any,
) -> Env:
    """An Env on ``store``: group_wait 10 s, group_interval 30 s, repeat 1 h, settle 30 s.

    The wall clock is ``epoch`` plus the fake clock's reading.
    """
    clock = clock if clock is not None else FakeClock(1000.0)
    outbox = Outbox(store)
    outbox.ensure_schema()
    silences = SilenceStore(store)
    silences.ensure_schema()
    chosen = list(
        receivers
        if receivers is not None
        else [Receiver(name="ops", url="http://127.0.0.1:9/hook", secret="s3cret")]
    )

    def wall() -> datetime:
        return epoch + timedelta(seconds=clock.monotonic())

    settings: dict[str, Any] = {
        "group_wait_s": 10,
        "group_interval_s": 30,
        "repeat_interval_s": 3600,
        "resolve_settle_s": 30,
        "external_url": "http://biomem.local:8080",
        **options,
    }
    manager = AlertManager(
        clock=clock,
        wall_clock=wall,
        outbox=outbox,
        receivers=chosen,
        silence_store=silences,
        **settings,
    )
    return Env(clock, outbox, manager, chosen, silences, epoch)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class WebhookServer:
    """A webhook receiver on a loopback port.

    Answers the next code of ``answers`` (then ``code``) with ``reply_headers``
    and ``reply_text``; records every request in ``attempts`` and the ones it
    accepted (2xx) in ``requests``. ``start()`` again after ``stop()`` listens
    on the same port (a receiver back up).
    """

    def __init__(self) -> None:
        self.code = 200
        self.answers: list[int] = []
        self.reply_headers: dict[str, str] = {}
        self.reply_text = "ok"
        self.attempts: list[Received] = []
        self.requests: list[Received] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received = Received({k.lower(): v for k, v in self.headers.items()}, body)
                with owner._lock:
                    code = owner.answers.pop(0) if owner.answers else owner.code
                    owner.attempts.append(received)
                    if 200 <= code < 300:
                        owner.requests.append(received)
                reply = owner.reply_text.encode()
                self.send_response(code)
                for name, value in owner.reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def payloads(self) -> list[dict[str, Any]]:
        return [r.payload for r in self.requests]
