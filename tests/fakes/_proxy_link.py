"""The fault proxy's machinery: one proxied connection, pumped in both directions.

Private to :mod:`tests.fakes.proxy`; the faults it obeys are the proxy's attributes,
read on every chunk, so a switch takes effect on connections already open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tests.fakes.proxy import FaultProxy

__all__ = ["Link", "abort_with_rst"]

_CHUNK: Final = 65536


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Link:
    """One client connection and its upstream, pumped in both directions."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.forwarded = 0
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self, *, rst: bool) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if rst:
                abort_with_rst(writer)
            else:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upward: bool
    ) -> None:
        """Forward one direction. Reading and forwarding are apart, so that latency delays
        each chunk from its arrival (pipelined, as on a long link), not one after another."""
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def receive() -> None:
            try:
                while True:
                    await proxy._flowing.wait()  # a partition: stop reading, TCP backs up
                    size = _CHUNK
                    if proxy.bandwidth_bps is not None:
                        # Small reads, so the throttle is smooth rather than bursty.
                        size = max(1, min(_CHUNK, proxy.bandwidth_bps // 10))
                    data = await reader.read(size)
                    await chunks.put((loop.time(), data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await chunks.put((loop.time(), b""))

        receiving = asyncio.ensure_future(receive())
        try:
            while True:
                arrived, data = await chunks.get()
                if not data:
                    break
                # A partition that began after this chunk arrived holds it too.
                await proxy._flowing.wait()
                delay = arrived + proxy.latency_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if proxy.bandwidth_bps is not None:
                    await asyncio.sleep(len(data) / proxy.bandwidth_bps)
                limit = proxy.close_after_bytes
                if limit is not None and self.forwarded + len(data) >= limit:
                    data = data[: max(0, limit - self.forwarded)]
                    self._count(len(data), upward)
                    if data:
                        writer.write(data)
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                    self.abort(rst=False)
                    return
                self._count(len(data), upward)
                writer.write(data)
                await writer.drain()
            # EOF from one side: pass the half-close on, the other direction carries on.
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
        except (ConnectionError, OSError):
            self.abort(rst=False)
        finally:
            receiving.cancel()

    def _count(self, size: int, upward: bool) -> None:
        self.forwarded += size
        if upward:
            self.proxy._bytes_up += size
        else:
            self.proxy._bytes_down += size
