"""The fault proxy against a real echo server on loopback: each fault does what it says,
and heal() undoes it."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.fakes.proxy import FaultProxy

# Socket timeouts bound every wait; nothing here sleeps to decide anything.
WAIT_S = 5.0
SILENCE_S = 0.5  # how long "no answer" is watched for


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[0], int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*echo) as running:
        yield running


def connect(proxy: FaultProxy, timeout: float = WAIT_S) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return recv_exactly(sock, len(payload))


def test_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    """Without faults the proxy is transparent and counts the bytes each way."""
    with connect(proxy) as sock:
        assert roundtrip(sock, b"hello" * 1000) == b"hello" * 1000
    deadline = time.monotonic() + WAIT_S
    while proxy.stats().active and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = proxy.stats()
    assert stats.connections == 1 and stats.active == 0
    assert stats.bytes_up == stats.bytes_down == 5000


def test_latency_delays_every_answer_until_healed(proxy: FaultProxy) -> None:
    """With 0.3 s latency an echo takes at least 0.6 s (one delay each way); heal removes it."""
    proxy.set_latency(0.3)
    with connect(proxy) as sock:
        started = time.monotonic()
        assert roundtrip(sock, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.6
        proxy.heal()
        sock.settimeout(0.25)  # well under the old delay
        assert roundtrip(sock, b"pong") == b"pong"


def test_bandwidth_limit_slows_a_transfer(proxy: FaultProxy) -> None:
    """At 20 kB/s, 10 kB cannot get through in under 0.5 s (the directions overlap)."""
    proxy.set_bandwidth(20_000)
    payload = bytes(range(256)) * 40  # 10,240 bytes
    with connect(proxy) as sock:
        started = time.monotonic()
        assert roundtrip(sock, payload) == payload
        assert time.monotonic() - started >= len(payload) / 20_000


def test_reset_sends_rst_to_existing_and_new_connections(proxy: FaultProxy) -> None:
    """reset() aborts open connections with RST and resets new ones until healed."""
    with connect(proxy) as sock:
        assert roundtrip(sock, b"a") == b"a"
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"b")
            if not sock.recv(1):  # a FIN would read as b"": that is not a reset
                pytest.fail("the connection was closed, not reset")
    with pytest.raises(ConnectionResetError), connect(proxy) as sock:
        # The RST may already meet connect() itself, or the first send or receive.
        sock.sendall(b"c")
        if not sock.recv(1):
            pytest.fail("the new connection was closed, not reset")
    assert proxy.stats().resets >= 2
    proxy.heal()
    with connect(proxy) as sock:
        assert roundtrip(sock, b"d") == b"d"


def test_blackhole_accepts_but_never_answers_then_delivers_on_heal(proxy: FaultProxy) -> None:
    """During a blackhole connects succeed and nothing comes back; after heal the held
    bytes arrive, as TCP retransmission would deliver them after a partition."""
    with connect(proxy) as old:
        assert roundtrip(old, b"before") == b"before"
        proxy.blackhole()
        old.settimeout(SILENCE_S)
        old.sendall(b"during")
        with pytest.raises(TimeoutError):
            old.recv(10)
        with connect(proxy) as new:  # the handshake succeeds: the kernel accepts
            new.settimeout(SILENCE_S)
            new.sendall(b"hello")
            with pytest.raises(TimeoutError):
                new.recv(10)
            proxy.heal()
            new.settimeout(WAIT_S)
            assert recv_exactly(new, 5) == b"hello"
        old.settimeout(WAIT_S)
        assert recv_exactly(old, 6) == b"during"


def test_refuse_closes_the_port_and_heal_reopens_the_same_one(proxy: FaultProxy) -> None:
    """refuse() makes connects fail with ECONNREFUSED; heal() listens on the same port."""
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy).close()
    proxy.heal()
    assert proxy.port == port
    with connect(proxy) as sock:
        assert roundtrip(sock, b"back") == b"back"


def test_close_after_n_bytes_cuts_each_connection(proxy: FaultProxy) -> None:
    """close_after(10): a connection carries 10 bytes in all, then ends."""
    proxy.close_after(10)
    with connect(proxy) as sock:
        sock.sendall(b"0123456789abcdef")
        received = b""
        while True:
            try:
                chunk = sock.recv(100)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        # 10 bytes went up (the limit), so none could come back.
        assert received == b""
    proxy.heal()
    with connect(proxy) as sock:
        assert roundtrip(sock, b"0123456789abcdef") == b"0123456789abcdef"


def test_close_after_counts_both_directions(proxy: FaultProxy) -> None:
    """With a limit of 6, a 4-byte echo gets 2 bytes back before the cut."""
    proxy.close_after(6)
    with connect(proxy) as sock:
        sock.sendall(b"abcd")
        assert recv_exactly(sock, 4) == b"ab"


def test_drop_all_cuts_existing_connections_only(proxy: FaultProxy) -> None:
    """drop_all() ends what is open; the next connection works."""
    with connect(proxy) as sock:
        assert roundtrip(sock, b"x") == b"x"
        proxy.drop_all()
        with contextlib.suppress(ConnectionResetError):  # a reset is also an end
            assert sock.recv(1) == b""
    with connect(proxy) as sock:
        assert roundtrip(sock, b"y") == b"y"


def test_events_record_when_faults_were_switched(proxy: FaultProxy) -> None:
    """Each switch is recorded with its monotonic time, in order."""
    before = time.monotonic()
    proxy.blackhole()
    proxy.heal()
    assert [e.what for e in proxy.events] == ["blackhole", "heal"]
    first = proxy.first_event("blackhole")
    assert first is not None and first >= before


def test_upstream_down_closes_the_client_connection(echo: tuple[str, int]) -> None:
    """A proxy whose upstream refuses closes each client connection at once."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy, connect(proxy) as sock:
        sock.sendall(b"anyone?")
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(10) == b""


def test_bad_arguments_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(-1)
    with pytest.raises(ValueError, match="bandwidth"):
        proxy.set_bandwidth(0)
    with pytest.raises(ValueError, match="close_after"):
        proxy.close_after(-5)
