"""The lean HTTP/1.1 transport under the Ollama client, over real sockets on loopback.

Two servers: the fake Ollama (each fault the issue names, through the real
OllamaClient, so the errors the pipeline sees are the ones it saw over httpcore)
and a scripted asyncio server that writes exact bytes, for the framing and
keep-alive cases no well-behaved server produces on demand.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from biomem.clients.http11 import LeanTransport, ollama_http_client
from biomem.clients.ollama import OllamaClient
from biomem.pipeline.enrichment import ENRICHMENT_SCHEMA
from biomem.resilience.clock import FakeClock
from biomem.resilience.errors import LLMRequestError, LLMResponseError, LLMUnavailable
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Ana and I fixed the deploy checklist; felt proud."}]
CLOSE = b""  # a scripted step: read the request, then close without answering
HANGUP = b"<hangup>"  # ending a scripted step: close the connection after writing it


def _client(http: httpx.AsyncClient, url: str, *, timeout_s: float = 5.0) -> OllamaClient:
    return OllamaClient(
        http,
        base_url=url,
        model="llama3.2",
        embedding_model="nomic-embed-text",
        timeout_s=timeout_s,
    )


async def _received(fake: FakeOllama, path: str, count: int, timeout_s: float = 5.0) -> None:
    """Wait until the fake has received ``count`` requests on ``path`` (fail past the timeout)."""
    async with asyncio.timeout(timeout_s):
        while fake.request_count(path) < count:
            await asyncio.sleep(0.005)
    assert fake.request_count(path) == count


# --------------------------------------------------------------------------------------
# Against the fake Ollama: answers, every fault, and recovery after each
# --------------------------------------------------------------------------------------


async def test_answers_and_reuses_one_connection(fake_ollama: FakeOllama) -> None:
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        client = _client(http, fake_ollama.url)
        first = await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)
        for _ in range(4):
            assert await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA) == first
        vectors = await client.embed(["one", "two"])
        models = await client.models()
        assert transport.idle_connections() == 1  # six exchanges, one connection
    assert '"goal"' in first and len(vectors) == 2 and len(vectors[0]) == 768
    assert models.chat_present
    sent = fake_ollama.last_request("/api/chat")
    assert sent is not None and sent.json()["format"] == ENRICHMENT_SCHEMA
    headers = {name.lower(): value for name, value in sent.headers.items()}
    assert headers["content-length"] == str(len(sent.body))
    assert transport.idle_connections() == 0  # closed with the client


async def test_concurrent_requests_each_get_a_connection(fake_ollama: FakeOllama) -> None:
    fake_ollama.hang(paths=["/api/embed"])  # held until released: all five must be in at once
    transport = LeanTransport(max_idle=3)
    async with httpx.AsyncClient(transport=transport) as http:
        client = _client(http, fake_ollama.url)
        texts = [f"memory {n}" for n in range(5)]
        calls = asyncio.gather(*(client.embed([t]) for t in texts))
        await _received(fake_ollama, "/api/embed", 5)  # five in flight, none answered
        fake_ollama.reset_faults()
        answers = await calls
        assert len({tuple(a[0]) for a in answers}) == 5
        assert transport.idle_connections() == 3  # max_idle kept, the other two closed


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_statuses_are_unavailable_with_retry_after(
    fake_ollama: FakeOllama, status: int
) -> None:
    fake_ollama.fail_with(status, count=1, paths=["/api/chat"], retry_after=2)
    async with ollama_http_client() as http:
        client = _client(http, fake_ollama.url)
        with pytest.raises(LLMUnavailable) as caught:
            await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)
        assert caught.value.status == status and caught.value.retry_after == 2
        assert await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)  # the next one answers


async def test_a_hang_times_out_and_the_next_request_answers(fake_ollama: FakeOllama) -> None:
    fake_ollama.hang(paths=["/api/chat"], count=1)
    async with ollama_http_client() as http:
        client = _client(http, fake_ollama.url, timeout_s=0.5)
        with pytest.raises(LLMUnavailable, match="timed out"):
            await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)
        assert await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)


async def test_a_malformed_body_is_a_response_error(fake_ollama: FakeOllama) -> None:
    fake_ollama.malformed(count=1, paths=["/api/chat"])
    async with ollama_http_client() as http:
        client = _client(http, fake_ollama.url)
        with pytest.raises(LLMResponseError, match="malformed JSON"):
            await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)
        assert await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)


async def test_a_connection_dropped_mid_answer_is_unavailable(fake_ollama: FakeOllama) -> None:
    fake_ollama.drop_connection(count=1, paths=["/api/chat"])
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        client = _client(http, fake_ollama.url)
        with pytest.raises(LLMUnavailable, match="RemoteProtocolError"):
            await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)
        assert transport.idle_connections() == 0  # a broken connection is never pooled
        assert await client.chat_json(MESSAGES, schema=ENRICHMENT_SCHEMA)


async def test_refused_is_unavailable_and_a_restart_is_reached(fake_ollama: FakeOllama) -> None:
    async with ollama_http_client() as http:
        client = _client(http, fake_ollama.url)
        await client.models()
        fake_ollama.refuse()
        with pytest.raises(LLMUnavailable, match="ConnectError"):
            await client.models()
        fake_ollama.restart()
        assert (await client.models()).chat_present


async def test_a_scheme_other_than_http_is_a_request_error() -> None:
    async with ollama_http_client() as http:
        client = _client(http, "ftp://127.0.0.1:1")
        with pytest.raises(LLMRequestError, match="scheme"):
            await client.models()


# --------------------------------------------------------------------------------------
# Against a scripted server: exact bytes on the wire
# --------------------------------------------------------------------------------------


@dataclass
class Scripted:
    """Answers each request with the next scripted bytes (CLOSE: hang up instead of
    answering; a step ending in HANGUP: hang up after it)."""

    steps: list[bytes]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                step = self.steps.pop(0)
                if step == CLOSE:
                    return
                writer.write(step.removesuffix(HANGUP))
                await writer.drain()
                if step.endswith(HANGUP):
                    return
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    script = Scripted(steps=[])
    script.server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    try:
        yield script
    finally:
        script.server.close()
        await script.server.wait_closed()


def _ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def test_the_request_on_the_wire(scripted: Scripted) -> None:
    scripted.steps = [_ok(b'{"ok": true}')]
    async with ollama_http_client() as http:
        response = await http.post(scripted.url + "/api/chat?x=1", json={"a": "é"})
    assert response.json() == {"ok": True}
    head, _, body = scripted.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/chat?x=1 HTTP/1.1"
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    assert names.count(b"host") == 1 and names.count(b"connection") == 1
    assert names.count(b"content-length") == 1 and b"transfer-encoding" not in names
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert body == '{"a":"é"}'.encode()


async def test_chunked_answers_are_joined(scripted: Scripted) -> None:
    scripted.steps = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;name=value\r\n{"a"\r\n5\r\n: 1}\n\r\n0\r\nX-Trailer: t\r\n\r\n',
        _ok(b"{}"),
    ]
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get(scripted.url + "/")
        assert response.content == b'{"a": 1}\n'
        assert "transfer-encoding" not in response.headers
        assert (await http.get(scripted.url + "/")).content == b"{}"
    assert scripted.connections == 1  # the connection after a chunked answer is reused


async def test_connection_close_and_unframed_answers_are_not_reused(scripted: Scripted) -> None:
    scripted.steps = [
        _ok(b"1", b"Connection: close") + HANGUP,
        b"HTTP/1.1 200 OK\r\n\r\nto the end" + HANGUP,
        _ok(b"3"),
    ]
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get(scripted.url + "/")).content == b"1"
        assert (await http.get(scripted.url + "/")).content == b"to the end"
        assert (await http.get(scripted.url + "/")).content == b"3"
    assert scripted.connections == 3


async def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one(
    scripted: Scripted,
) -> None:
    scripted.steps = [_ok(b"1"), CLOSE, _ok(b"2"), CLOSE]
    async with ollama_http_client() as http:
        assert (await http.get(scripted.url + "/")).content == b"1"
        # The server hangs up on the pooled connection as the second request arrives:
        # it never started on it, so it goes once more on a fresh connection.
        assert (await http.get(scripted.url + "/")).content == b"2"
        assert scripted.connections == 2 and len(scripted.requests) == 3
        # On a fresh connection the same hang-up is the server's answer: an error.
        fresh = httpx.AsyncClient(transport=LeanTransport())
        async with fresh:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
                await fresh.get(scripted.url + "/")


async def test_an_idle_connection_past_its_expiry_is_not_reused(scripted: Scripted) -> None:
    clock = FakeClock(100.0)
    scripted.steps = [_ok(b"1"), _ok(b"2"), _ok(b"3")]
    async with httpx.AsyncClient(transport=LeanTransport(clock=clock)) as http:
        await http.get(scripted.url + "/")
        clock.advance(4.9)
        await http.get(scripted.url + "/")
        assert scripted.connections == 1
        clock.advance(5.1)
        await http.get(scripted.url + "/")
    assert scripted.connections == 2


async def test_interim_gzip_and_bodiless_answers(scripted: Scripted) -> None:
    packed = gzip.compress(b'{"zipped": true}')
    scripted.steps = [
        b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(packed, b"Content-Encoding: gzip"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  # HEAD: the length, no body
        _ok(b"after"),
    ]
    async with ollama_http_client() as http:
        assert (await http.get(scripted.url + "/")).json() == {"zipped": True}
        assert (await http.get(scripted.url + "/")).status_code == 204
        assert (await http.head(scripted.url + "/")).content == b""
        assert (await http.get(scripted.url + "/")).content == b"after"
    assert scripted.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ],
    ids=["http2", "not-http", "header", "length", "chunk-size", "encoding", "truncated"],
)
async def test_unreadable_answers_are_protocol_errors(scripted: Scripted, answer: bytes) -> None:
    scripted.steps = [answer + HANGUP]
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(scripted.url + "/", timeout=2.0)
        assert transport.idle_connections() == 0


@pytest.mark.parametrize(
    "answer",
    [
        _ok(b"x" * 101),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n"
        + b"x" * 64
        + b"\r\n40\r\n"
        + b"x" * 64
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101,
    ],
    ids=["content-length", "chunked", "to-the-end"],
)
async def test_an_answer_over_max_body_is_refused(scripted: Scripted, answer: bytes) -> None:
    scripted.steps = [answer + HANGUP, _ok(b"x" * 100)]
    transport = LeanTransport(max_body=100)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="over 100 bytes"):
            await http.get(scripted.url + "/", timeout=2.0)
        assert (await http.get(scripted.url + "/")).content == b"x" * 100  # at the limit: read


async def test_a_cancelled_request_closes_its_connection(fake_ollama: FakeOllama) -> None:
    fake_ollama.set_latency(5.0)
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        client = _client(http, fake_ollama.url)
        task = asyncio.create_task(client.embed(["slow"]))
        await _received(fake_ollama, "/api/embed", 1)  # sent, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.idle_connections() == 0
        fake_ollama.set_latency(0)
        assert await client.embed(["fast"])


async def test_https_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    script = Scripted(steps=[_ok(b"secret-free"), _ok(b"again")])
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = LeanTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
        async with httpx.AsyncClient(transport=trusting) as http:
            assert (await http.get(f"https://localhost:{port}/")).content == b"secret-free"
            assert (await http.get(f"https://localhost:{port}/")).content == b"again"
        assert script.connections == 1
        async with ollama_http_client() as http:  # the system's trust store: not trusted
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://localhost:{port}/")
    finally:
        server.close()
        await server.wait_closed()
