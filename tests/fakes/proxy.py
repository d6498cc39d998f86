"""A fault-injecting TCP proxy for tests: asyncio, on loopback, switchable at run time.

:class:`FaultProxy` listens on ``127.0.0.1`` (port 0 picks a free one, kept across
``refuse()``/``heal()``) and forwards every connection to one upstream
``host:port``. Its event loop runs in a background thread; the test thread
switches faults while traffic flows:

* ``set_latency(s)``: every chunk is passed on ``s`` seconds after it arrived;
* ``set_bandwidth(bytes_per_s)``: each direction of each connection is throttled;
* ``reset()``: existing and new connections are aborted with a RST (``SO_LINGER`` 0);
* ``blackhole()``: new connections are accepted and never answered, and nothing
  is forwarded on existing ones (a network partition: bytes wait, as TCP
  retransmission would make them, and flow again on ``heal()``);
* ``refuse()``: the listening socket is closed ("connection refused");
  ``heal()`` listens again on the same port;
* ``close_after(n)``: each connection is closed after ``n`` bytes (both directions);
* ``drop_all()``: cut the existing connections (new ones are unaffected);
* ``heal()``: remove every fault.

``events`` records what was switched and when (``time.monotonic()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeVar

from tests.fakes._proxy_link import Link, abort_with_rst

__all__ = ["FaultProxy", "ProxyEvent", "ProxyStats"]

Mode = Literal["forward", "blackhole", "reset", "refuse"]
T = TypeVar("T")

_CONTROL_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    """One switch of the proxy's faults."""

    at: float  # time.monotonic()
    what: str  # e.g. "blackhole", "latency 0.2", "heal"


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since start."""

    connections: int  # accepted
    active: int  # open now
    bytes_up: int  # client -> upstream
    bytes_down: int  # upstream -> client
    resets: int  # connections aborted with RST


class FaultProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` whose faults the test switches.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._port = port
        self.latency_s = 0.0
        self.bandwidth_bps: int | None = None
        self.close_after_bytes: int | None = None
        self.mode: Mode = "forward"
        self.events: list[ProxyEvent] = []
        self._connections: set[Link] = set()
        self._accepted = 0
        self._resets = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event = asyncio.Event()
        self._lock = threading.Lock()

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and listen (port 0 picks a free port, kept from then on)."""
        if self._loop is not None:
            raise RuntimeError("FaultProxy is already running")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait()

        async def begin() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            await self._listen()

        self._call(begin())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return

        async def end() -> None:
            await self._close_listener()
            for conn in list(self._connections):
                conn.abort(rst=False)
            self._flowing.set()
            # End the connection handlers here, so that closing the loop leaves none pending.
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(end())
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_CONTROL_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self._port

    def stats(self) -> ProxyStats:
        with self._lock:
            active = len(self._connections)
        return ProxyStats(self._accepted, active, self._bytes_up, self._bytes_down, self._resets)

    def __repr__(self) -> str:
        return (
            f"FaultProxy({self.host}:{self._port} -> {self.upstream_host}:{self.upstream_port},"
            f" mode={self.mode}, latency={self.latency_s}, bandwidth={self.bandwidth_bps},"
            f" close_after={self.close_after_bytes})"
        )

    # ---- faults (called from the test thread) --------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk in either direction by ``seconds`` (0 removes the delay)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency_s = seconds
        self._event(f"latency {seconds:g}")

    def set_bandwidth(self, bytes_per_s: int | None) -> None:
        """Throttle each direction of each connection (None removes the limit)."""
        if bytes_per_s is not None and bytes_per_s < 1:
            raise ValueError("bandwidth must be at least 1 byte/s")
        self.bandwidth_bps = bytes_per_s
        self._event(f"bandwidth {bytes_per_s}")

    def close_after(self, n_bytes: int | None) -> None:
        """Close each connection once ``n_bytes`` went through it (None removes the limit)."""
        if n_bytes is not None and n_bytes < 0:
            raise ValueError("close_after must be >= 0")
        self.close_after_bytes = n_bytes
        self._event(f"close_after {n_bytes}")

    def reset(self) -> None:
        """Abort every connection with RST, and every new one until healed."""

        async def apply() -> None:
            self.mode = "reset"
            self._flowing.set()
            for conn in list(self._connections):
                self._resets += 1
                conn.abort(rst=True)

        self._call(apply())
        self._event("reset")

    def blackhole(self) -> None:
        """Accept but never answer; forward nothing on existing connections until healed."""

        async def apply() -> None:
            self.mode = "blackhole"
            self._flowing.clear()

        self._call(apply())
        self._event("blackhole")

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused until healed."""

        async def apply() -> None:
            self.mode = "refuse"
            await self._close_listener()

        self._call(apply())
        self._event("refuse")

    def drop_all(self) -> None:
        """Cut every existing connection (closed, not reset); new ones are unaffected."""

        async def apply() -> None:
            for conn in list(self._connections):
                conn.abort(rst=False)

        self._call(apply())
        self._event("drop_all")

    def heal(self) -> None:
        """Remove every fault: forward again (held bytes flow), listen again if refused."""

        async def apply() -> None:
            self.latency_s = 0.0
            self.bandwidth_bps = None
            self.close_after_bytes = None
            self.mode = "forward"
            self._flowing.set()
            if self._server is None:
                await self._listen()

        self._call(apply())
        self._event("heal")

    def first_event(self, what: str) -> float | None:
        """The monotonic time ``what`` was first switched on, or None."""
        return next((e.at for e in self.events if e.what.startswith(what)), None)

    # ---- machinery (on the loop thread) --------------------------------------------------

    def _event(self, what: str) -> None:
        self.events.append(ProxyEvent(time.monotonic(), what))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FaultProxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CONTROL_TIMEOUT_S)

    async def _listen(self) -> None:
        # SO_REUSEADDR (asyncio's default on Linux): the port is taken again right
        # after refuse(), even with connections from before still in TIME_WAIT.
        server = await asyncio.start_server(self._accept, self.host, self._port, reuse_address=True)
        self._port = int(server.sockets[0].getsockname()[1])
        self._server = server

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Python 3.12 waits here for the open connections too: do not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 0.5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Only stop() cancels a connection's task; ending quietly keeps asyncio's
        # start_server callback from logging the cancellation as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self.mode == "reset":
            self._resets += 1
            abort_with_rst(writer)
            return
        conn = Link(self, writer)
        with self._lock:
            self._connections.add(conn)
        try:
            # Blackholed: the client's connect succeeded (the kernel did that),
            # nothing else happens until the partition heals.
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                # Upstream down: the client sees its connection closed.
                writer.transport.abort()
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.ensure_future(conn.pump(reader, up_writer, upward=True)),
                asyncio.ensure_future(conn.pump(up_reader, writer, upward=False)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
            for side in (writer, up_writer):
                side.transport.close()
        finally:
            with self._lock:
                self._connections.discard(conn)
