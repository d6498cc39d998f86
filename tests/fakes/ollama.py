"""A fake Ollama server for tests: real HTTP on loopback, deterministic answers, switchable faults.

:class:`FakeOllama` speaks the subset of Ollama's HTTP API that biomem uses
(``/api/tags``, ``/api/version``, ``/api/chat``, ``/api/generate``, ``/api/embed``
and the legacy ``/api/embeddings``) with the same JSON shapes as the real server.
Every answer is derived from the request alone:

* chat/generate with ``format`` set to a JSON schema return a document valid for
  that schema, built from the words of the last user message (or the prompt);
* embeddings are L2-normalised sums of per-word pseudo-random vectors, so texts
  sharing words are closer (by cosine) than unrelated texts.

Faults (latency, HTTP errors, hangs, malformed bodies, malformed model content,
dropped connections, refused connections) can be switched on and off from the
test thread while the server runs. Each fault applies to every path, or only to
the ``paths`` given, and optionally only to the next ``count`` requests.

Run it standalone with ``python -m tests.fakes.ollama --port 11434``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Literal, Self, cast

__all__ = [
    "CONTENT_PATHS",
    "DEFAULT_MODELS",
    "ContentStyle",
    "FakeOllama",
    "RecordedRequest",
    "embed_text",
    "generate_from_schema",
    "main",
    "reply_text",
    "tokenize",
]

DEFAULT_MODELS: Final = ("llama3.2:latest", "nomic-embed-text:latest")
VERSION: Final = "0.5.0-fake"
# Paths whose answers carry model-generated text (targets of ``malformed_content``).
CONTENT_PATHS: Final = frozenset({"/api/chat", "/api/generate"})
ContentStyle = Literal["fenced", "garbage", "wrong_types"]

_KNOWN_PATHS: Final = {
    "/": ("GET", "HEAD"),
    "/api/version": ("GET", "HEAD"),
    "/api/tags": ("GET", "HEAD"),
    "/api/chat": ("POST",),
    "/api/generate": ("POST",),
    "/api/embed": ("POST",),
    "/api/embeddings": ("POST",),
}
_DEFAULT_ERRORS: Final = {
    400: "bad request",
    404: "not found",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
    504: "gateway timeout",
}
_STREAM_PIECE_CHARS: Final = 12
_WAIT_SLICE_SECONDS: Final = 0.02
_JOIN_TIMEOUT_SECONDS: Final = 5.0

# --------------------------------------------------------------------------------------
# Deterministic text helpers
# --------------------------------------------------------------------------------------

_WORD_RE: Final = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_STOPWORD_TEXT: Final = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves please return json following text memory given"""
_STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
_FALLBACK_WORDS: Final = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
)
_LONG_TEXT_HINTS: Final = (
    "summary",
    "description",
    "text",
    "content",
    "reason",
    "explanation",
    "gist",
    "note",
    "body",
    "answer",
)
_NAME_HINTS: Final = ("name", "title", "label", "entity", "person", "topic", "subject")
_MAX_SCHEMA_DEPTH: Final = 8


def tokenize(text: str) -> list[str]:
    """The words of ``text`` in order (letters and digits, inner apostrophes and hyphens kept)."""
    return _WORD_RE.findall(text)


def _hash_int(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) derived from ``parts``."""
    return _hash_int(*parts) / float(1 << 64)


def _salient_words(text: str) -> list[str]:
    """Distinct notable words: capitalised ones first (in order), then frequent ones.

    A capitalised word counts as a name only when it is not merely the first word of
    a sentence (unless it is capitalised somewhere else too).
    """
    matches = list(_WORD_RE.finditer(text))
    names: set[str] = set()
    for match in matches:
        word = match.group()
        before = text[: match.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?\n:;\"'"
        if word[:1].isupper() and not sentence_start and word.lower() not in _STOPWORDS:
            names.add(word.lower())
    seen: set[str] = set()
    capitalised: list[str] = []
    for match in matches:
        word = match.group()
        if word.lower() in names and word[:1].isupper() and word.lower() not in seen:
            seen.add(word.lower())
            capitalised.append(word)
    counts: Counter[str] = Counter()
    first_index: dict[str, int] = {}
    for index, match in enumerate(matches):
        key = match.group().lower()
        if key in _STOPWORDS or key in seen or len(key) < 3:
            continue
        counts[key] += 1
        first_index.setdefault(key, index)
    frequent = sorted(counts, key=lambda key: (-counts[key], first_index[key]))
    return capitalised + frequent


def _phrase(words: Sequence[str], seed: str, *, long: bool) -> str:
    if not words:
        return "nothing to report"
    if long:
        return " ".join(words[:12])
    size = 2 + _hash_int(seed, "size") % 3
    start = _hash_int(seed, "start") % len(words)
    chosen = [words[(start + offset) % len(words)] for offset in range(min(size, len(words)))]
    return " ".join(chosen)


def reply_text(text: str) -> str:
    """The short deterministic sentence answered when no ``format`` is requested."""
    words = tokenize(text)
    if not words:
        return "I have nothing to add."
    return f"You said: {' '.join(words[:10])}."


# --------------------------------------------------------------------------------------
# Schema-driven document generator
# --------------------------------------------------------------------------------------


class _SchemaGenerator:
    def __init__(self, root: Mapping[str, Any], text: str) -> None:
        self.root = root
        self.text = text
        self.words = tokenize(text)
        self.salient = _salient_words(text)

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow local ``$ref`` pointers and pick one branch of ``anyOf``/``oneOf``/``allOf``."""
        for _ in range(_MAX_SCHEMA_DEPTH):
            ref = schema.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                target: Any = self.root
                for part in ref.lstrip("#").split("/"):
                    if part:
                        target = target[part.replace("~1", "/").replace("~0", "~")]
                siblings = {key: value for key, value in schema.items() if key != "$ref"}
                schema = {**target, **siblings}
                continue
            for key in ("anyOf", "oneOf"):
                options = schema.get(key)
                if isinstance(options, list) and options:
                    non_null = [
                        option
                        for option in options
                        if not (isinstance(option, Mapping) and option.get("type") == "null")
                    ]
                    chosen = (non_null or options)[0]
                    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                    schema = {**rest, **chosen}
                    break
            else:
                all_of = schema.get("allOf")
                if isinstance(all_of, list) and all_of:
                    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
                    for part in all_of:
                        if isinstance(part, Mapping):
                            merged.update(part)
                    schema = merged
                    continue
                return schema
        return schema

    @staticmethod
    def type_of(schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            non_null = [item for item in declared if item != "null"]
            declared = non_null[0] if non_null else "null"
        if isinstance(declared, str):
            return declared
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def generate(self, schema: Mapping[str, Any], path: str = "$", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[_hash_int(self.text, path, "enum") % len(enum)]
        kind = self.type_of(schema)
        if kind == "object":
            return self.generate_object(schema, path, depth)
        if kind == "array":
            return self.generate_array(schema, path, depth)
        if kind == "integer":
            return self.generate_integer(schema, path)
        if kind == "number":
            return self.generate_number(schema, path)
        if kind == "boolean":
            return _hash_int(self.text, path, "bool") % 2 == 1
        if kind == "null":
            return None
        return self.generate_string(schema, path)

    def generate_object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            properties = {}
        required = [name for name in schema.get("required", []) if isinstance(name, str)]
        names = list(properties) if depth < _MAX_SCHEMA_DEPTH else []
        names += [name for name in required if name not in names]
        result: dict[str, Any] = {}
        for name in names:
            sub = properties.get(name, {})
            result[name] = self.generate(
                sub if isinstance(sub, Mapping) else {}, f"{path}.{name}", depth + 1
            )
        return result

    def _count(self, schema: Mapping[str, Any], default: int, available: int | None = None) -> int:
        low = int(schema.get("minItems", 0))
        high_value = schema.get("maxItems")
        high = int(high_value) if high_value is not None else max(low, default)
        wanted = default if available is None else min(default, max(available, low))
        return max(low, min(high, wanted))

    def generate_array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [
                self.generate(item, f"{path}[{index}]", depth + 1)
                for index, item in enumerate(prefix)
                if isinstance(item, Mapping)
            ]
        items = schema.get("items")
        item_schema = self.resolve(items) if isinstance(items, Mapping) else {}
        if depth >= _MAX_SCHEMA_DEPTH:
            return []
        enum = item_schema.get("enum")
        if isinstance(enum, list) and enum:
            count = self._count(schema, min(2, len(enum)))
            start = _hash_int(self.text, path, "enum") % len(enum)
            return [enum[(start + index) % len(enum)] for index in range(count)]
        if self.type_of(item_schema) == "string" and not item_schema.get("format"):
            return self.string_list(schema, item_schema, path)
        count = self._count(schema, 2)
        return [self.generate(item_schema, f"{path}[{index}]", depth + 1) for index in range(count)]

    def string_list(
        self, schema: Mapping[str, Any], item_schema: Mapping[str, Any], path: str
    ) -> list[str]:
        count = self._count(schema, 3, available=len(self.salient))
        chosen = [self.fit_string(word, item_schema) for word in self.salient]
        result: list[str] = []
        for word in [*chosen, *_FALLBACK_WORDS]:
            if len(result) >= count:
                break
            if word not in result:
                result.append(word)
        index = 0
        while len(result) < count:  # more items asked for than words available
            candidate = self.fit_string(
                f"{_FALLBACK_WORDS[index % len(_FALLBACK_WORDS)]}{index}", item_schema
            )
            if candidate not in result:
                result.append(candidate)
            index += 1
        return result

    @staticmethod
    def fit_string(value: str, schema: Mapping[str, Any]) -> str:
        min_length = int(schema.get("minLength", 0))
        max_length = schema.get("maxLength")
        while len(value) < min_length:
            value = f"{value} {value}" if value else "x"
        if max_length is not None:
            value = value[: int(max_length)].rstrip() or value[: int(max_length)]
        return value

    def generate_string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        seed = _hash_int(self.text, path)
        word = (self.words[seed % len(self.words)] if self.words else "fake").lower()
        if fmt == "date-time":
            moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=seed % (366 * 86400))
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if fmt == "date":
            return (
                (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=seed % 366)).date().isoformat()
            )
        if fmt == "time":
            return f"{seed % 24:02d}:{seed // 24 % 60:02d}:00"
        if fmt == "email":
            return f"{re.sub(r'[^a-z0-9]', '', word) or 'fake'}@example.com"
        if fmt in ("uri", "url"):
            return f"https://example.com/{re.sub(r'[^a-z0-9]', '', word) or 'fake'}"
        if fmt == "uuid":
            return str(
                uuid.UUID(
                    bytes=hashlib.blake2b(
                        f"{self.text}\x1f{path}".encode(), digest_size=16
                    ).digest()
                )
            )
        name = path.rsplit(".", 1)[-1].lower()
        if self.salient and any(hint in name for hint in _NAME_HINTS):
            pick = self.salient[_hash_int(self.text, path, "name") % min(3, len(self.salient))]
            return self.fit_string(pick, schema)
        long = any(hint in name for hint in _LONG_TEXT_HINTS)
        return self.fit_string(_phrase(self.words, f"{self.text}\x1f{path}", long=long), schema)

    def _bounds(self, schema: Mapping[str, Any]) -> tuple[float, float, bool, bool]:
        minimum: float | None = schema.get("minimum")
        maximum: float | None = schema.get("maximum")
        exclusive_min = schema.get("exclusiveMinimum")
        exclusive_max = schema.get("exclusiveMaximum")
        low_open = high_open = False
        if isinstance(exclusive_min, int | float) and not isinstance(exclusive_min, bool):
            minimum, low_open = exclusive_min, True
        if isinstance(exclusive_max, int | float) and not isinstance(exclusive_max, bool):
            maximum, high_open = exclusive_max, True
        if minimum is not None and maximum is not None:
            return float(minimum), float(maximum), low_open, high_open
        if minimum is not None:
            return float(minimum), float(minimum) + 1.0, low_open, high_open
        if maximum is not None:
            return float(maximum) - 1.0, float(maximum), low_open, high_open
        return 0.0, 1.0, low_open, high_open

    def generate_integer(self, schema: Mapping[str, Any], path: str) -> int:
        low_f, high_f, low_open, high_open = self._bounds(schema)
        low = math.floor(low_f) + 1 if low_open else math.ceil(low_f)
        high = math.ceil(high_f) - 1 if high_open else math.floor(high_f)
        if high < low:
            return low
        return low + _hash_int(self.text, path, "int") % (high - low + 1)

    def generate_number(self, schema: Mapping[str, Any], path: str) -> float:
        low, high, low_open, high_open = self._bounds(schema)
        fraction = _fraction(self.text, path, "number")
        if low_open or high_open:
            fraction = 0.05 + 0.9 * fraction
        exact = low + fraction * (high - low)
        value = round(exact, 4)
        too_low = value < low or (low_open and value <= low)
        too_high = value > high or (high_open and value >= high)
        if too_low or too_high:
            value = low + (high - low) / 2
        return value

    def wrong_types(self, schema: Mapping[str, Any]) -> Any:
        """A JSON value that is valid JSON but not valid for ``schema``."""
        schema = self.resolve(schema)
        if self.type_of(schema) != "object":
            return {"unexpected": _phrase(self.words, self.text, long=False)}
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return [_phrase(self.words, self.text, long=False)]
        result: dict[str, Any] = {}
        for name, sub in properties.items():
            kind = self.type_of(self.resolve(sub)) if isinstance(sub, Mapping) else "string"
            result[name] = 42 if kind == "string" else "not a " + kind
        return result


def generate_from_schema(schema: Mapping[str, Any], text: str) -> Any:
    """A JSON value valid for ``schema``, derived deterministically from ``text``.

    Supports object/array/string/number/integer/boolean/null, ``enum``/``const``,
    ``required``, ``minItems``/``maxItems``, ``minLength``/``maxLength``,
    ``minimum``/``maximum`` (and their exclusive forms), common string formats, local
    ``$ref`` (``#/$defs/...``), ``anyOf``/``oneOf`` (first non-null branch) and ``allOf``.
    """
    return _SchemaGenerator(schema, text).generate(schema)


def _json_mode_document(text: str) -> dict[str, Any]:
    words = tokenize(text)
    keywords = _salient_words(text)[:3]
    return {"response": _phrase(words, text, long=True), "keywords": keywords}


def _model_content(fmt: Any, text: str, style: ContentStyle | None) -> str:
    """The assistant text for ``text`` under ``format`` ``fmt``, possibly deliberately broken."""
    document: Any
    if isinstance(fmt, Mapping):
        document = generate_from_schema(fmt, text)
    elif fmt == "json":
        document = _json_mode_document(text)
    else:
        document = None
    if style is None:
        return reply_text(text) if document is None else json.dumps(document)
    if style == "fenced":
        inner = json.dumps(document if document is not None else reply_text(text), indent=2)
        return (
            "Sure! Here is the JSON you asked for:\n```json\n"
            f"{inner}\n```\nLet me know if you need anything else."
        )
    if style == "wrong_types":
        if isinstance(fmt, Mapping):
            return json.dumps(_SchemaGenerator(fmt, text).wrong_types(fmt))
        return json.dumps(["unexpected", "array"])
    # "garbage": prose with no JSON in it at all, so no repair can recover a document.
    return (
        "I'm sorry, but I can't produce that in the requested format right now. "
        "Let me think about it some more... <|eot_id|>"
    )


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _word_vector(word: str, dim: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dim))


def embed_text(text: str, dim: int = 768) -> list[float]:
    """The deterministic unit-length embedding of ``text``: a weighted sum of per-word vectors."""
    tokens = [word.lower() for word in tokenize(text)] or [text.strip().lower() or "<empty>"]
    total = [0.0] * dim
    for token in tokens:
        weight = 0.25 if token in _STOPWORDS else 1.0
        for index, value in enumerate(_word_vector(token, dim)):
            total[index] += weight * value
    norm = math.sqrt(sum(value * value for value in total)) or 1.0
    return [value / norm for value in total]


# --------------------------------------------------------------------------------------
# Faults and request records
# --------------------------------------------------------------------------------------

_FaultKind = Literal["latency", "hang", "fail", "malformed", "malformed_content", "drop"]


@dataclass
class _Fault:
    kind: _FaultKind
    paths: frozenset[str] | None
    remaining: int | None
    seconds: float = 0.0
    status: int = 0
    message: str = ""
    retry_after: str | None = None
    style: ContentStyle | None = None

    def matches(self, path: str) -> bool:
        if self.kind == "malformed_content" and path not in CONTENT_PATHS:
            return False
        return self.paths is None or path in self.paths


@dataclass
class _Plan:
    delay: float = 0.0
    hang: threading.Event | None = None
    fault: _Fault | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received: method, path (without query), headers and raw body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float = field(compare=False)

    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` if it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def _paths(paths: Iterable[str] | None) -> frozenset[str] | None:
    if paths is None:
        return None
    if isinstance(paths, str):
        return frozenset({paths})
    return frozenset(paths)


def _check_count(count: int | None) -> int | None:
    if count is not None and count < 1:
        raise ValueError("count must be a positive number of requests or None")
    return count


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------


class _BadRequestError(Exception):
    pass


class _Aborted(Exception):
    """The server is stopping: close the connection without answering."""


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None  # set for streamed (NDJSON) answers


def _json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return _Reply(status, body, headers=headers or [])


def _error_reply(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return _json_reply(status, {"error": message}, headers)


def _stream_reply(lines: list[dict[str, Any]]) -> _Reply:
    chunks = [json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n" for line in lines]
    return _Reply(200, b"".join(chunks), content_type="application/x-ndjson", chunks=chunks)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pieces(content: str) -> list[str]:
    return [
        content[i : i + _STREAM_PIECE_CHARS] for i in range(0, len(content), _STREAM_PIECE_CHARS)
    ]


def _timings(text: str, content: str) -> dict[str, int]:
    prompt_tokens = max(1, len(tokenize(text)))
    eval_tokens = max(1, len(content) // 4)
    return {
        "total_duration": 1_000_000 * (prompt_tokens + eval_tokens) + 5_000_000,
        "load_duration": 5_000_000,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 100_000 * prompt_tokens,
        "eval_count": eval_tokens,
        "eval_duration": 1_000_000 * eval_tokens,
    }


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so it can close them all on stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if self.stopping.is_set():
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"fake-ollama-conn-{self.server_address[1]}",
            daemon=True,
        )
        with self._lock:
            if isinstance(request, socket.socket):
                self._connections.add(request)
            self._handlers.add(thread)
        thread.start()

    def _serve_connection(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                if isinstance(request, socket.socket):
                    self._connections.discard(request)
                self._handlers.discard(threading.current_thread())

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError | _Aborted) or self.stopping.is_set():
            return  # the client went away or we are stopping: nothing worth reporting
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        with self._lock:
            handlers = list(self._handlers)
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            for handler in handlers:
                while handler.is_alive() and not deadline.is_set():
                    handler.join(_WAIT_SLICE_SECONDS)
        finally:
            timer.cancel()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "FakeOllama/" + VERSION
    sys_version = ""

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read the fake's state, not its log."""

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # ---- request processing ----------------------------------------------------------

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)) if int(length) > 0 else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _handle(self) -> None:
        server = self._server
        fake = server.fake
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        plan = fake._arrive(self.command, path, dict(self.headers.items()), body)
        try:
            if plan.delay > 0 and server.stopping.wait(plan.delay):
                raise _Aborted
            if plan.hang is not None:
                while not plan.hang.wait(_WAIT_SLICE_SECONDS):
                    if server.stopping.is_set():
                        raise _Aborted
                if server.stopping.is_set():
                    raise _Aborted
            fault = plan.fault
            if fault is not None and fault.kind == "fail":
                headers = [("Retry-After", fault.retry_after)] if fault.retry_after else []
                self._send(_error_reply(fault.status, fault.message, headers))
                return
            style = fault.style if fault is not None and fault.kind == "malformed_content" else None
            reply = self._route(path, body, style)
            if fault is not None and fault.kind == "malformed":
                cut = reply.body[: max(1, len(reply.body) // 2)]
                self._send(_Reply(200, cut, content_type="application/json; charset=utf-8"))
            elif fault is not None and fault.kind == "drop":
                self._send_partial_and_drop(reply)
            else:
                self._send(reply)
        except _Aborted:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, path: str, body: bytes, style: ContentStyle | None) -> _Reply:
        methods = _KNOWN_PATHS.get(path)
        if methods is None:
            return _Reply(404, b"404 page not found", content_type="text/plain")
        if self.command not in methods:
            return _Reply(405, b"405 method not allowed", content_type="text/plain")
        fake = self._server.fake
        if path == "/":
            return _Reply(200, b"Ollama is running", content_type="text/plain; charset=utf-8")
        if path == "/api/version":
            return _json_reply(200, {"version": VERSION})
        if path == "/api/tags":
            return _json_reply(200, {"models": fake._tags()})
        try:
            request = self._parse_json(body)
            if path == "/api/chat":
                return fake._chat(request, style)
            if path == "/api/generate":
                return fake._generate(request, style)
            if path == "/api/embed":
                return fake._embed(request)
            return fake._embeddings(request)
        except _BadRequestError as error:
            return _error_reply(400, str(error))

    @staticmethod
    def _parse_json(body: bytes) -> dict[str, Any]:
        if not body.strip():
            raise _BadRequestError("missing request body")
        try:
            parsed = json.loads(body)
        except ValueError as error:
            raise _BadRequestError(f"invalid JSON in request body: {error}") from error
        if not isinstance(parsed, dict):
            raise _BadRequestError("request body must be a JSON object")
        return parsed

    # ---- writing -----------------------------------------------------------------------

    def _start(self, reply: _Reply, *, length: int | None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()

    def _send(self, reply: _Reply) -> None:
        if reply.chunks is not None and self.command != "HEAD":
            self._start(reply, length=None)
            for chunk in reply.chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._start(reply, length=len(reply.body))
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        self.wfile.flush()

    def _send_partial_and_drop(self, reply: _Reply) -> None:
        self._start(reply, length=len(reply.body))
        self.wfile.write(reply.body[: len(reply.body) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------


class FakeOllama:
    """An Ollama-compatible HTTP server on loopback with deterministic answers and faults.

    Faults are kept in the order they were added; for each request the first
    matching response fault (``fail_with``, ``malformed``, ``malformed_content``,
    ``drop_connection``) applies, after any matching latency (the longest one) and
    hang. ``count`` limits a fault to the next ``count`` matching requests.
    Counters, the request log and faults survive ``stop()``/``restart()``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = DEFAULT_MODELS,
        embedding_dim: int = 768,
        log_size: int = 100,
    ) -> None:
        if embedding_dim < 1:
            raise ValueError("embedding_dim must be positive")
        self.host = host
        self.models: tuple[str, ...] = tuple(models)
        self.embedding_dim = embedding_dim
        self._port = port
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: deque[RecordedRequest] = deque(maxlen=log_size)
        self._latencies: list[_Fault] = []
        self._hangs: list[_Fault] = []
        self._faults: list[_Fault] = []
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Bind (port 0 picks a free port, kept for ``restart``) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeOllama is already running")
        server = _Server((self.host, self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-ollama-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, close every connection and release hung requests (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        server.join_handlers(_JOIN_TIMEOUT_SECONDS)
        if thread is not None:
            thread.join(_JOIN_TIMEOUT_SECONDS)

    def refuse(self) -> None:
        """Stop listening so clients get "connection refused"; ``restart()`` brings it back."""
        self.stop()

    def restart(self) -> None:
        """Listen again on the same port (stopping first if running)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first ``start``)."""
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"FakeOllama({self.url}, {state})"

    # ---- observations ----------------------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """A snapshot of how many requests arrived per path (query string removed)."""
        with self._lock:
            return Counter(self._counts)

    def request_count(self, path: str | None = None) -> int:
        """Requests that arrived on ``path``, or on every path if ``None``."""
        with self._lock:
            return self._counts[path] if path is not None else sum(self._counts.values())

    @property
    def request_log(self) -> list[RecordedRequest]:
        """The last ``log_size`` requests, oldest first."""
        with self._lock:
            return list(self._log)

    def last_request(self, path: str | None = None) -> RecordedRequest | None:
        """The most recent request (on ``path`` if given), or ``None``."""
        with self._lock:
            for record in reversed(self._log):
                if path is None or record.path == path:
                    return record
        return None

    def clear_history(self) -> None:
        """Forget request counts and the request log."""
        with self._lock:
            self._counts.clear()
            self._log.clear()

    # ---- faults --------------------------------------------------------------------------

    def set_latency(
        self, seconds: float, *, paths: Iterable[str] | None = None, count: int | None = None
    ) -> None:
        """Delay answers by ``seconds`` (each request sleeps on its own; 0 on all paths clears)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        scope = _paths(paths)
        with self._lock:
            if seconds == 0 and scope is None:
                self._latencies.clear()
                return
            self._latencies = [rule for rule in self._latencies if rule.paths != scope]
            if seconds > 0:
                self._latencies.append(
                    _Fault("latency", scope, _check_count(count), seconds=seconds)
                )

    def fail_with(
        self,
        status: int,
        *,
        count: int | None = None,
        paths: Iterable[str] | None = None,
        retry_after: float | str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer ``status`` with ``{"error": message}`` (and ``Retry-After`` if given)."""
        if not 400 <= status <= 599:
            raise ValueError("fail_with expects a 4xx or 5xx status")
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        fault = _Fault(
            "fail",
            _paths(paths),
            _check_count(count),
            status=status,
            message=message or _DEFAULT_ERRORS.get(status, f"fake error {status}"),
            retry_after=None if retry_after is None else str(retry_after),
        )
        self._add(fault)

    def hang(self, *, paths: Iterable[str] | None = None, count: int | None = None) -> None:
        """Accept requests but never answer until ``reset_faults()`` (then answer) or ``stop()``."""
        with self._lock:
            self._hangs.append(_Fault("hang", _paths(paths), _check_count(count)))

    def malformed(self, *, count: int | None = None, paths: Iterable[str] | None = None) -> None:
        """Answer 200 with a truncated body that is not valid JSON."""
        self._add(_Fault("malformed", _paths(paths), _check_count(count)))

    def malformed_content(
        self,
        style: ContentStyle = "fenced",
        *,
        count: int | None = None,
        paths: Iterable[str] | None = None,
    ) -> None:
        """Keep the HTTP body valid but make the model text (chat/generate) invalid JSON.

        ``"fenced"``: the valid document inside a ```json fence with prose around it
        (repairable); ``"garbage"``: prose with no JSON at all (irreparable);
        ``"wrong_types"``: valid JSON whose values have the wrong types for the schema.
        """
        if style not in ("fenced", "garbage", "wrong_types"):
            raise ValueError(f"unknown malformed content style {style!r}")
        self._add(_Fault("malformed_content", _paths(paths), _check_count(count), style=style))

    def drop_connection(
        self, *, count: int | None = None, paths: Iterable[str] | None = None
    ) -> None:
        """Send the headers and half the body, then close the connection."""
        self._add(_Fault("drop", _paths(paths), _check_count(count)))

    def reset_faults(self) -> None:
        """Remove every fault and latency, and let hung requests carry on and answer."""
        with self._lock:
            self._latencies.clear()
            self._hangs.clear()
            self._faults.clear()
            released, self._release = self._release, threading.Event()
        released.set()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    @staticmethod
    def _consume(rules: list[_Fault], rule: _Fault) -> None:
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                rules.remove(rule)

    def _arrive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Plan:
        """Record a request and decide, atomically, which faults it meets."""
        plan = _Plan()
        with self._lock:
            self._counts[path] += 1
            self._log.append(RecordedRequest(method, path, headers, body, time.monotonic()))
            for rule in [rule for rule in self._latencies if rule.matches(path)]:
                plan.delay = max(plan.delay, rule.seconds)
                self._consume(self._latencies, rule)
            hang = next((rule for rule in self._hangs if rule.matches(path)), None)
            if hang is not None:
                plan.hang = self._release
                self._consume(self._hangs, hang)
            fault = next((rule for rule in self._faults if rule.matches(path)), None)
            if fault is not None:
                plan.fault = fault
                self._consume(self._faults, fault)
        return plan

    # ---- endpoint logic (called from handler threads) -----------------------------------

    def _resolve_model(self, request: Mapping[str, Any]) -> str:
        model = request.get("model")
        if not isinstance(model, str) or not model.strip():
            raise _BadRequestError("model is required")
        return model

    def _known(self, model: str) -> bool:
        name = model if ":" in model else f"{model}:latest"
        return name in self.models or model in self.models

    @staticmethod
    def _not_found(model: str) -> _Reply:
        return _error_reply(404, f'model "{model}" not found, try pulling it first')

    @staticmethod
    def _stream_flag(request: Mapping[str, Any]) -> bool:
        stream = request.get("stream", True)
        if not isinstance(stream, bool):
            raise _BadRequestError("stream must be a boolean")
        return stream

    @staticmethod
    def _format(request: Mapping[str, Any]) -> Any:
        fmt = request.get("format")
        if fmt in (None, "", "json") or isinstance(fmt, dict):
            return fmt or None
        raise _BadRequestError(f"invalid format: {json.dumps(fmt)}")

    def _chat(self, request: Mapping[str, Any], style: ContentStyle | None) -> _Reply:
        model = self._resolve_model(request)
        messages = request.get("messages", [])
        if not isinstance(messages, list):
            raise _BadRequestError("messages must be a list")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _BadRequestError("each message must be an object with a role")
            if not isinstance(message.get("content", ""), str):
                raise _BadRequestError("message content must be a string")
        stream = self._stream_flag(request)
        fmt = self._format(request)
        if not self._known(model):
            return self._not_found(model)
        created = _now()
        if not messages:  # Ollama answers an empty conversation by loading the model
            return _json_reply(
                200,
                {
                    "model": model,
                    "created_at": created,
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                },
            )
        users = [m for m in messages if m.get("role") == "user"]
        text = str((users or messages)[-1].get("content", ""))
        content = _model_content(fmt, text, style)
        final = {
            "model": model,
            "created_at": created,
            "message": {"role": "assistant", "content": "" if stream else content},
            "done_reason": "stop",
            "done": True,
            **_timings(text, content),
        }
        if not stream:
            return _json_reply(200, final)
        lines: list[dict[str, Any]] = [
            {
                "model": model,
                "created_at": created,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            for piece in _pieces(content)
        ]
        return _stream_reply([*lines, final])

    def _generate(self, request: Mapping[str, Any], style: ContentStyle | None) -> _Reply:
        model = self._resolve_model(request)
        prompt = request.get("prompt", "")
        if not isinstance(prompt, str):
            raise _BadRequestError("prompt must be a string")
        stream = self._stream_flag(request)
        fmt = self._format(request)
        if not self._known(model):
            return self._not_found(model)
        created = _now()
        if not prompt:
            return _json_reply(
                200,
                {
                    "model": model,
                    "created_at": created,
                    "response": "",
                    "done": True,
                    "done_reason": "load",
                },
            )
        content = _model_content(fmt, prompt, style)
        final = {
            "model": model,
            "created_at": created,
            "response": "" if stream else content,
            "done": True,
            "done_reason": "stop",
            "context": [_hash_int(word) % 32000 for word in tokenize(prompt)[:16]],
            **_timings(prompt, content),
        }
        if not stream:
            return _json_reply(200, final)
        lines: list[dict[str, Any]] = [
            {"model": model, "created_at": created, "response": piece, "done": False}
            for piece in _pieces(content)
        ]
        return _stream_reply([*lines, final])

    def _embed_dim(self, request: Mapping[str, Any]) -> int:
        dimensions = request.get("dimensions")
        if dimensions is None:
            return self.embedding_dim
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise _BadRequestError("dimensions must be a positive integer")
        return min(dimensions, self.embedding_dim)

    def _embed(self, request: Mapping[str, Any]) -> _Reply:
        model = self._resolve_model(request)
        raw = request.get("input")
        if raw is None:
            raise _BadRequestError("input is required")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            inputs = list(raw)
        else:
            raise _BadRequestError("invalid input type: expected a string or a list of strings")
        dim = self._embed_dim(request)
        if not self._known(model):
            return self._not_found(model)
        embeddings = [self._vector(text, dim) for text in inputs]
        tokens = sum(max(1, len(tokenize(text))) for text in inputs)
        return _json_reply(
            200,
            {
                "model": model,
                "embeddings": embeddings,
                "total_duration": 1_000_000 * tokens + 5_000_000,
                "load_duration": 5_000_000,
                "prompt_eval_count": tokens,
            },
        )

    def _embeddings(self, request: Mapping[str, Any]) -> _Reply:
        model = self._resolve_model(request)
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            raise _BadRequestError("prompt is required")
        if not self._known(model):
            return self._not_found(model)
        return _json_reply(200, {"embedding": self._vector(prompt, self.embedding_dim)})

    def _vector(self, text: str, dim: int) -> list[float]:
        full = embed_text(text, self.embedding_dim)
        if dim == self.embedding_dim:
            return full
        head = full[:dim]
        norm = math.sqrt(sum(value * value for value in head)) or 1.0
        return [value / norm for value in head]

    def _tags(self) -> list[dict[str, Any]]:
        tags = []
        for name in self.models:
            embedding = "embed" in name
            family = "nomic-bert" if embedding else "llama"
            tags.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2024-12-01T12:00:00.000000000Z",
                    "size": 274_302_450 if embedding else 2_019_393_189,
                    "digest": hashlib.sha256(name.encode("utf-8")).hexdigest(),
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": family,
                        "families": [family],
                        "parameter_size": "137M" if embedding else "3.2B",
                        "quantization_level": "F16" if embedding else "Q4_K_M",
                    },
                }
            )
        return tags


# --------------------------------------------------------------------------------------
# Standalone entry point
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, printing only ``listening on URL`` to stdout."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--embedding-dim", type=int, default=768)
    parser.add_argument(
        "--model", action="append", dest="models", help="model to offer (repeatable)"
    )
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeOllama(
        host=args.host,
        port=args.port,
        models=tuple(args.models) if args.models else DEFAULT_MODELS,
        embedding_dim=args.embedding_dim,
    )
    if args.latency > 0:
        fake.set_latency(args.latency)
    with fake:
        sys.stdout.write(f"listening on {fake.url}\n")
        sys.stdout.flush()
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
