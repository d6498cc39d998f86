"""A lean HTTP/1.1 transport for httpx, on asyncio streams, for the Ollama client.

httpx's default transport (httpcore, over anyio, parsed by h11) spends about
3 ms of CPU per request on one event loop, which caps a client at roughly 300
requests a second whatever Ollama's speed: at OLLAMA_MAX_CONCURRENCY 16 the
short-term stage could not reach 0.85 of the limit (bench/RESULTS.md). This
transport does the same work for the one kind of exchange the Ollama client
makes (a request with a whole body, a response read whole) at a fraction of
the cost, and keeps httpx as the client API, so the Ollama client, its error
translation and its tests are unchanged.

What it does:

* HTTP/1.1 over plain TCP or TLS (``https``), keep-alive, a pool of idle
  connections per origin; a connection idle longer than ``keepalive_expiry``,
  or one the server has closed, is not reused;
* a request sent on a reused connection that the server closes before any byte
  of the answer is sent once more on a new connection (the server closed an
  idle connection as it was taken), as browsers and urllib3 do;
* responses framed by Content-Length, chunked transfer encoding, or the end of
  the connection; 1xx interim responses skipped; HEAD, 204 and 304 bodiless;
* httpx's timeouts: ``connect`` for the connection, ``read`` for the answer
  (from the request sent to its last byte), ``write`` for the send;
* errors raised as httpx's own (``ConnectError``, ``ConnectTimeout``,
  ``ReadTimeout``, ``WriteTimeout``, ``ReadError``, ``WriteError``,
  ``RemoteProtocolError``, ``UnsupportedProtocol``), so callers translate them
  exactly as before.

What it does not: proxies (Ollama is reached directly; environment proxy
variables are not read), HTTP/2, streaming bodies in either direction.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import httpx

from biomem.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["LeanTransport", "ollama_http_client"]

_Origin = tuple[str, str, int]
_MAX_HEAD = 64 * 1024  # bytes of status line and headers we accept
_READ_PIECE = 64 * 1024  # bytes read at a time from a body framed by the end of the connection
_NO_BODY_STATUS = frozenset({204, 304})
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_SKIPPED_REQUEST_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class _Closed(Exception):
    """The server closed the connection before any byte of the answer."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0
    used: bool = False  # has carried an exchange before (came from the pool)

    def reusable(self, now: float, expiry: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since <= expiry
        )

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


class LeanTransport(httpx.AsyncBaseTransport):
    """An httpx transport: HTTP/1.1 keep-alive on asyncio streams.

    Args:
        keepalive_expiry: seconds an idle connection stays usable (httpx's default, 5).
        max_idle: idle connections kept per origin; more are closed.
        max_body: the largest answer body read, in bytes; a larger one is a
            protocol error (and its connection closed), never a process out of memory.
        clock: measures idleness (a fake one in tests).
        ssl_context: for ``https`` origins; the system's default trust store if None.
    """

    def __init__(
        self,
        *,
        keepalive_expiry: float = 5.0,
        max_idle: int = 64,
        max_body: int = 256 * 1024 * 1024,
        clock: Clock = SYSTEM_CLOCK,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._expiry = keepalive_expiry
        self._max_idle = max_idle
        self._max_body = max_body
        self._clock = clock
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    def idle_connections(self) -> int:
        """Connections in the pool now (for tests and diagnostics)."""
        return sum(len(conns) for conns in self._idle.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        origin = _origin(request)
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        message = _serialize(request, body)
        expects_body = request.method != "HEAD"
        for attempt in (1, 2):
            connection = await self._acquire(
                origin, timeouts.get("connect"), request, fresh=attempt == 2
            )
            try:
                answer = await _exchange(
                    connection, message, expects_body, timeouts, request, self._max_body
                )
            except _Closed:
                connection.close()
                if connection.used and attempt == 1:
                    continue  # closed by the server while idle: once more, on a new one
                raise httpx.RemoteProtocolError(
                    "server disconnected without sending a response", request=request
                ) from None
            except BaseException:
                # Cancelled, timed out or broken mid-exchange: the connection's
                # state is unknown, so it is never reused.
                connection.close()
                raise
            if answer.keep_alive:
                self._release(origin, connection)
            else:
                connection.close()
            return httpx.Response(
                answer.status,
                headers=answer.headers,
                content=answer.body,
                request=request,
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _acquire(
        self,
        origin: _Origin,
        connect_timeout: float | None,
        request: httpx.Request,
        *,
        fresh: bool,
    ) -> _Connection:
        pool = self._idle.get(origin)
        now = self._clock.monotonic()
        while pool and not fresh:
            connection = pool.pop()
            if connection.reusable(now, self._expiry):
                return connection
            connection.close()
        return await self._connect(origin, connect_timeout, request)

    async def _connect(
        self, origin: _Origin, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=_MAX_HEAD
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc}", request=request) from exc
        return _Connection(reader, writer)

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        pool = self._idle.setdefault(origin, [])
        if self._closed or len(pool) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = self._clock.monotonic()
        connection.used = True
        pool.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        pools, self._idle = self._idle, {}
        for pool in pools.values():
            for connection in pool:
                connection.close()


def ollama_http_client() -> httpx.AsyncClient:
    """The httpx client for Ollama: httpx's API over :class:`LeanTransport`."""
    return httpx.AsyncClient(transport=LeanTransport())


def _origin(request: httpx.Request) -> _Origin:
    url = request.url
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(
            f"the URL's scheme must be http or https, not {scheme!r}", request=request
        )
    if not url.host:
        raise httpx.UnsupportedProtocol("the URL has no host", request=request)
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        if name.lower() not in _SKIPPED_REQUEST_HEADERS:
            lines.append(name + b": " + value)
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _exchange(
    connection: _Connection,
    message: bytes,
    expects_body: bool,
    timeouts: dict[str, float | None],
    request: httpx.Request,
    max_body: int,
) -> _Answer:
    writer, reader = connection.writer, connection.reader
    try:
        writer.write(message)
        async with asyncio.timeout(timeouts.get("write")):
            await writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request", request=request) from exc
    except OSError as exc:
        if connection.used:
            raise _Closed from exc
        raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
    try:
        async with asyncio.timeout(timeouts.get("read")):
            return await _read_answer(reader, expects_body, max_body, first_use=not connection.used)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("waiting for the answer", request=request) from exc
    except _Malformed as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError(
            "server disconnected in the middle of the answer", request=request
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("answer headers too large", request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _Malformed(Exception):
    """The server's answer is not HTTP/1.1 we can read."""


async def _read_answer(
    reader: asyncio.StreamReader, expects_body: bool, max_body: int, *, first_use: bool
) -> _Answer:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Closed from exc
            raise
        except ConnectionResetError as exc:
            if first_use:
                raise
            raise _Closed from exc
        status, reason, headers, version = _parse_head(head)
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue, 103 Early Hints)
        break
    names = {name.lower(): value for name, value in headers}
    connection_header = names.get(b"connection", b"").lower()
    keep_alive = (
        b"close" not in connection_header
        if version == b"HTTP/1.1"
        else b"keep-alive" in connection_header
    )
    if not expects_body or status in _NO_BODY_STATUS or status == 101:
        return _Answer(status, reason, headers, b"", keep_alive and status != 101)
    encoding = names.get(b"transfer-encoding", b"").lower()
    if encoding:
        if encoding.rsplit(b",", 1)[-1].strip() != b"chunked":
            raise _Malformed(f"unsupported transfer-encoding {encoding.decode('latin-1')!r}")
        body = await _read_chunked(reader, max_body)
        # The body is handed over whole, so the framing header no longer applies.
        unframed = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
        return _Answer(status, reason, unframed, body, keep_alive)
    elif b"content-length" in names:
        try:
            length = int(names[b"content-length"])
        except ValueError as exc:
            raise _Malformed("content-length is not a number") from exc
        if length < 0:
            raise _Malformed("content-length is negative")
        _check_size(length, max_body)
        body = await reader.readexactly(length)
    else:
        body = await _read_to_end(reader, max_body)  # framed by the end of the connection
        keep_alive = False
    return _Answer(status, reason, headers, body, keep_alive)


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Malformed(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) == 3 else b""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _Malformed(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return status, reason, headers, parts[0]


def _check_size(size: int, max_body: int) -> None:
    if size > max_body:
        raise _Malformed(f"answer body over {max_body} bytes")


async def _read_to_end(reader: asyncio.StreamReader, max_body: int) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while piece := await reader.read(_READ_PIECE):
        size += len(piece)
        _check_size(size, max_body)
        pieces.append(piece)
    return b"".join(pieces)


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line[:-2].split(b";", 1)[0].strip()
        if not size_text or size_text.strip(_HEX_DIGITS):
            raise _Malformed(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        total += size
        _check_size(total, max_body)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers, ignored
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _Malformed("a chunk not followed by CRLF")
