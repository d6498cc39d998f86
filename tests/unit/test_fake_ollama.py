"""The fake Ollama server: real HTTP answers, deterministic content and switchable faults."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.ollama import FakeOllama, embed_text, generate_from_schema

REPO = Path(__file__).resolve().parents[2]
CHAT_MODEL = "llama3.2:latest"
EMBED_MODEL = "nomic-embed-text:latest"
MEMORY = "Met Ana at the Lisbon office to plan the Atlas launch; Ana worried about the budget."

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 200},
        "entities": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "importance": {"type": "number", "minimum": 0, "maximum": 1},
        "valence": {"type": "number", "minimum": -1, "maximum": 1},
        "score": {"type": "number"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "actionable": {"type": "boolean"},
        "kind": {"type": "string", "enum": ["event", "fact", "task", "feeling"]},
        "place": {"$ref": "#/$defs/Place"},
        "due": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    },
    "required": ["summary", "entities", "importance", "valence", "priority", "kind", "place"],
    "$defs": {
        "Place": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            },
            "required": ["name", "tags"],
        }
    },
}


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0, trust_env=False) as http:
        yield http


def chat(client: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": "Extract the memory as JSON."},
            {"role": "user", "content": text},
        ],
        "stream": False,
    }
    body.update(extra)
    return client.post("/api/chat", json=body)


def content_of(response: httpx.Response) -> Any:
    return json.loads(response.json()["message"]["content"])


def embed(client: httpx.Client, texts: list[str]) -> list[list[float]]:
    response = client.post("/api/embed", json={"model": EMBED_MODEL, "input": texts})
    assert response.status_code == 200
    vectors: list[list[float]] = response.json()["embeddings"]
    return vectors


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---- plain endpoints ------------------------------------------------------------------------


def test_root_version_and_tags(fake: FakeOllama, client: httpx.Client) -> None:
    """The banner, version and model list have Ollama's shapes."""
    assert client.get("/").text == "Ollama is running"
    assert client.get("/api/version").json() == {"version": "0.5.0-fake"}
    models = client.get("/api/tags").json()["models"]
    assert [model["name"] for model in models] == [CHAT_MODEL, EMBED_MODEL]
    for model in models:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= model.keys()
        assert model["details"]["format"] == "gguf"
    assert fake.url == f"http://127.0.0.1:{fake.port}" and fake.port > 0


def test_chat_with_schema_returns_valid_document(client: httpx.Client) -> None:
    """A schema-constrained chat answers JSON with every required key, right types and ranges."""
    response = chat(client, MEMORY, format=SCHEMA)
    assert response.status_code == 200
    body = response.json()
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["message"]["role"] == "assistant"
    assert isinstance(body["eval_count"], int) and isinstance(body["total_duration"], int)
    doc = content_of(response)
    assert set(SCHEMA["required"]) <= doc.keys()
    assert isinstance(doc["summary"], str) and 0 < len(doc["summary"]) <= 200
    assert set(doc["summary"].split()) <= set(MEMORY.replace(";", "").replace(".", "").split())
    assert 1 <= len(doc["entities"]) <= 4
    assert all(isinstance(e, str) for e in doc["entities"])
    assert len(set(doc["entities"])) == len(doc["entities"])
    assert "Ana" in doc["entities"]
    assert 0 <= doc["importance"] <= 1 and -1 <= doc["valence"] <= 1 and 0 <= doc["score"] <= 1
    assert isinstance(doc["priority"], int) and 1 <= doc["priority"] <= 5
    assert isinstance(doc["actionable"], bool)
    assert doc["kind"] in {"event", "fact", "task", "feeling"}
    assert isinstance(doc["place"]["name"], str) and len(doc["place"]["tags"]) >= 2
    assert doc["due"] is None or len(doc["due"]) == 10


def test_chat_is_deterministic(client: httpx.Client) -> None:
    """The same input gives the same document; a different input gives a different one."""
    first = content_of(chat(client, MEMORY, format=SCHEMA))
    again = content_of(chat(client, MEMORY, format=SCHEMA))
    other = content_of(chat(client, "Bought milk and eggs at the Corner shop.", format=SCHEMA))
    assert first == again
    assert other != first
    assert first == generate_from_schema(SCHEMA, MEMORY)


def test_chat_json_mode_and_plain_text(client: httpx.Client) -> None:
    """format "json" answers a JSON object; no format answers a sentence from the input."""
    assert isinstance(content_of(chat(client, MEMORY, format="json")), dict)
    text = chat(client, "hello there world").json()["message"]["content"]
    assert "hello there world" in text


def test_streaming_chat_reassembles(client: httpx.Client) -> None:
    """Streamed NDJSON chunks (the default when stream is absent) add up to the full answer."""
    whole = chat(client, MEMORY, format=SCHEMA).json()["message"]["content"]
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": MEMORY}],
        "format": SCHEMA,
    }
    with client.stream("POST", "/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        chunks = [json.loads(line) for line in response.iter_lines() if line]
    assert len(chunks) > 2
    assert all(chunk["done"] is False for chunk in chunks[:-1])
    assert chunks[-1]["done"] is True and chunks[-1]["done_reason"] == "stop"
    assert "".join(chunk["message"]["content"] for chunk in chunks) == whole


def test_generate_answers_in_response(client: httpx.Client) -> None:
    """/api/generate answers the schema document in "response"."""
    body = {"model": CHAT_MODEL, "prompt": MEMORY, "format": SCHEMA, "stream": False}
    response = client.post("/api/generate", json=body)
    assert response.status_code == 200 and response.json()["done"] is True
    assert json.loads(response.json()["response"]) == generate_from_schema(SCHEMA, MEMORY)


def test_embeddings_are_normalised_deterministic_and_semantic(client: httpx.Client) -> None:
    """Embeddings have the configured size and unit length, and shared words mean closeness."""
    texts = ["meeting with Ana about Atlas", "Atlas meeting notes with Ana", "buy milk and eggs"]
    query, related, unrelated = embed(client, texts)
    assert all(len(vector) == 768 for vector in (query, related, unrelated))
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-9 for v in (query, related, unrelated))
    assert embed(client, [texts[0]])[0] == query == embed_text(texts[0])
    assert cosine(query, related) > 0.5 > cosine(query, unrelated) + 0.3
    legacy = client.post("/api/embeddings", json={"model": EMBED_MODEL, "prompt": texts[0]})
    assert legacy.json() == {"embedding": query}
    single = client.post("/api/embed", json={"model": EMBED_MODEL, "input": texts[0]}).json()
    assert single["embeddings"] == [query] and single["prompt_eval_count"] > 0


def test_unknown_model_and_bad_requests(client: httpx.Client) -> None:
    """An unknown model is a 404 like Ollama's; unparsable or incomplete bodies are 400s."""
    response = client.post("/api/chat", json={"model": "nope", "messages": [], "stream": False})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "nope" not found, try pulling it first'}
    missing = client.post("/api/embed", json={"model": "nope:7b", "input": "x"})
    assert missing.status_code == 404
    for bad in (b"{not json", b"[1]", b'{"messages": []}', b'{"model": "llama3.2"}'):
        answer = client.post("/api/embed", content=bad)
        assert answer.status_code == 400 and "error" in answer.json()
    assert client.post("/api/chat", content=b"{").status_code == 400
    assert client.get("/api/nothing").status_code == 404


# ---- faults -----------------------------------------------------------------------------


def test_latency_delays_answers(fake: FakeOllama, client: httpx.Client) -> None:
    """set_latency holds answers back by at least the delay, on the chosen paths only."""
    fake.set_latency(0.3, paths=["/api/tags"])
    started = time.monotonic()
    assert client.get("/api/version").status_code == 200
    assert time.monotonic() - started < 0.3
    started = time.monotonic()
    assert client.get("/api/tags").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fail_with_count_then_success(fake: FakeOllama, client: httpx.Client) -> None:
    """A counted failure answers its status once, with Retry-After, then the fake recovers."""
    fake.fail_with(503, count=1, retry_after=2)
    failed = client.get("/api/tags")
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "2"
    assert "error" in failed.json()
    assert client.get("/api/tags").status_code == 200


def test_fail_with_paths_and_reset(fake: FakeOllama, client: httpx.Client) -> None:
    """A path-scoped failure leaves other paths alone and lasts until reset_faults."""
    fake.fail_with(429, paths=["/api/embed"], message="slow down")
    for _ in range(2):
        answer = client.post("/api/embed", json={"model": EMBED_MODEL, "input": "x"})
        assert answer.status_code == 429 and answer.json() == {"error": "slow down"}
    assert client.get("/api/tags").status_code == 200
    fake.reset_faults()
    assert client.post("/api/embed", json={"model": EMBED_MODEL, "input": "x"}).status_code == 200


def test_hang_until_reset(fake: FakeOllama, client: httpx.Client) -> None:
    """A hung request times out on the client; reset_faults lets a waiting one finish."""
    fake.hang(paths=["/api/tags"])
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/tags", timeout=0.3)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(client.get("/api/tags").status_code))
    waiter.start()
    time.sleep(0.2)
    assert results == []
    fake.reset_faults()
    waiter.join(timeout=3)
    assert results == [200]


def test_stop_releases_hung_requests_without_leaking_threads(fake: FakeOllama) -> None:
    """stop() ends hung handlers promptly, closes idle connections and leaves no thread behind."""
    fake.hang()
    with httpx.Client(base_url=fake.url, timeout=5.0, trust_env=False) as http:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                http.get("/api/tags")
            except httpx.HTTPError as error:
                errors.append(error)

        waiter = threading.Thread(target=call)
        waiter.start()
        time.sleep(0.2)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 1.0
        waiter.join(timeout=3)
        assert len(errors) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-ollama")]


def test_malformed_body(fake: FakeOllama, client: httpx.Client) -> None:
    """malformed() answers 200 with a body that is not JSON."""
    fake.malformed(count=1)
    response = client.get("/api/tags")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.get("/api/tags").json()["models"]


def test_malformed_content_styles(fake: FakeOllama, client: httpx.Client) -> None:
    """Fenced content hides the valid document in prose; garbage and wrong types do not validate."""
    valid = generate_from_schema(SCHEMA, MEMORY)
    fake.malformed_content("fenced", count=1)
    fenced = chat(client, MEMORY, format=SCHEMA).json()["message"]["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(fenced)
    inner = fenced.split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(inner) == valid
    fake.malformed_content("garbage", count=1)
    garbage = chat(client, MEMORY, format=SCHEMA).json()["message"]["content"]
    assert "{" not in garbage and "[" not in garbage
    fake.malformed_content("wrong_types", count=1)
    wrong = content_of(chat(client, MEMORY, format=SCHEMA))
    assert not isinstance(wrong["summary"], str)
    assert content_of(chat(client, MEMORY, format=SCHEMA)) == valid


def test_drop_connection(fake: FakeOllama, client: httpx.Client) -> None:
    """A dropped connection makes httpx raise a protocol or read error, then service resumes."""
    fake.drop_connection(count=1, paths=["/api/chat"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client, MEMORY, format=SCHEMA)
    assert chat(client, MEMORY, format=SCHEMA).status_code == 200


def test_refuse_and_restart_on_same_port(fake: FakeOllama, client: httpx.Client) -> None:
    """refuse() gives connection refused; restart() serves again on the same port."""
    port = fake.port
    assert client.get("/api/tags").status_code == 200
    fake.refuse()
    with pytest.raises(httpx.ConnectError):
        client.get("/api/tags")
    fake.restart()
    assert fake.port == port
    assert client.get("/api/tags").status_code == 200


def test_counts_and_log(fake: FakeOllama, client: httpx.Client) -> None:
    """Requests are counted per path and their bodies kept for assertions."""
    chat(client, "first")
    chat(client, "second")
    client.get("/api/tags?verbose=1")
    assert fake.requests["/api/chat"] == 2 and fake.requests["/api/tags"] == 1
    assert fake.request_count() == 3
    last = fake.last_request("/api/chat")
    assert last is not None and last.json()["messages"][-1]["content"] == "second"
    fake.clear_history()
    assert fake.request_count() == 0 and fake.request_log == []


def test_concurrent_requests_overlap(fake: FakeOllama, client: httpx.Client) -> None:
    """Eight requests at 0.2 s latency each finish together, far sooner than one after another."""
    fake.set_latency(0.2)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: chat(client, f"note {i}").status_code, range(8)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 8
    assert 0.2 <= elapsed < 1.2


def test_standalone_main_serves_until_sigterm() -> None:
    """python -m tests.fakes.ollama prints one "listening on" line, serves, and exits on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama", "--port", "0", "--latency", "0.01"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert httpx.get(f"{url}/api/version", trust_env=False).json()["version"] == "0.5.0-fake"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == "" and stderr == ""
