"""Redaction: secrets and personal data are masked everywhere; one event is one line."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import string
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from biomem.config import LogFormat
from biomem.logging import configure_logging, get_logger
from biomem.resilience.redact import (
    MASK,
    RedactSecrets,
    SanitizeLines,
    mask_url,
    redact_text,
    redact_value,
    sanitize_line,
)

# --- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d", id="password"),
        pytest.param("postgresql://u@h/d", "postgresql://u@h/d", id="no-password"),
        pytest.param("http://h/x?token=abc&a=1", "http://h/x?token=***&a=1", id="query-token"),
        pytest.param("redis://:p@ss@h/0", "redis://:***@h/0", id="at-sign-in-password"),
        pytest.param(
            "https://hooks.slack.com/services/T0/B0/xyz",
            "https://hooks.slack.com/services/[REDACTED:slack_webhook]",
            id="slack-webhook",
        ),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    """Passwords and secret query parameters are masked; the rest stays readable."""
    assert mask_url(url) == expected


def test_mask_url_hides_webhook_path() -> None:
    """Webhook URLs carry their token in the path: only scheme and host stay."""
    assert (
        mask_url("https://hooks.example/T0/B0/xyz", hide_path=True) == "https://hooks.example/***"
    )


# --- free text: one case per family ------------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq7BFUpkGp3+XQ\nAoGBAN5p4kdjW\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret", "shown"),
    [
        pytest.param("dsn postgresql://app:s3cr3t@db/x", "s3cr3t", "app:***@db", id="url-password"),
        pytest.param("host=h password=s3cr3t dbname=d", "s3cr3t", "password=***", id="libpq"),
        pytest.param("GET /cb?code=1&access_token=t0k3n&x=1", "t0k3n", "token=***&x", id="query"),
        pytest.param('{"db_password": "a b c"}', "a b c", '"db_password": "***"', id="json-key"),
        pytest.param("X-Api-Key: k3y-123", "k3y-123", "X-Api-Key: ***", id="header"),
        pytest.param("Cookie: a=1; sid=s3ss", "sid=s3ss", "Cookie: ***", id="cookie"),
        pytest.param("Authorization: Bearer abc.def.ghi", "abc.def.ghi", "Bearer ***", id="auth"),
        pytest.param("curl -H 'Bearer tok-9'", "tok-9", "[REDACTED:bearer]", id="bearer"),
        pytest.param("Basic dXNlcjpwYXNz ok", "dXNlcjpwYXNz", "[REDACTED:basic]", id="basic"),
        pytest.param(
            "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t", "Ab3dEf6h", "[REDACTED:api_key]", id="openai"
        ),
        pytest.param(f"token {JWT} sent", "eyJzdWIi", "[REDACTED:jwt]", id="jwt"),
        pytest.param("id AKIAIOSFODNN7EXAMPLE", "IOSFODNN7", "[REDACTED:aws_key_id]", id="aws-id"),
        pytest.param(
            "aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI",
            "[REDACTED:aws_secret]",
            id="aws-secret",
        ),
        pytest.param(
            "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
            "A1b2C3d4",
            "[REDACTED:github_token]",
            id="github",
        ),
        pytest.param(
            "xoxb-1234567890-0987654321-AbCdEfGhIjKl",
            "AbCdEfGhIjKl",
            "[REDACTED:slack_token]",
            id="slack-token",
        ),
        pytest.param(
            "to https://hooks.slack.com/services/T000/B000/XXXXsecret",
            "XXXXsecret",
            "services/[REDACTED:slack_webhook]",
            id="slack-webhook",
        ),
        pytest.param(f"key {PEM} end", "MIIEow", "key [REDACTED:private_key] end", id="pem"),
        pytest.param("from jane.doe+x@example.co.uk.", "jane.doe", "[REDACTED:email].", id="email"),
        pytest.param("card 4111-1111-1111-1111 ok", "4111", "card [REDACTED:card] ok", id="card"),
        pytest.param("ssn 123-45-6789", "123-45", "ssn [REDACTED:ssn]", id="ssn"),
        pytest.param("call +14155552671", "4155552671", "[REDACTED:phone]", id="e164"),
        pytest.param("call (415) 555-2671", "555-2671", "[REDACTED:phone]", id="us-phone"),
    ],
)
def test_redact_text_masks_each_family(text: str, secret: str, shown: str) -> None:
    """Each family is masked with its documented marker and the secret is gone."""
    out = redact_text(text)
    assert secret not in out
    assert shown in out
    assert redact_text(out) == out


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-10-05T12:00:00.123456+00:00 started", id="timestamp"),
        pytest.param("on 2026-10-05 at 12:30:45", id="date-time"),
        pytest.param("biomem 1.2.3 on python 3.11.7", id="versions"),
        pytest.param("run 550e8400-e29b-41d4-a716-446655440000", id="uuid"),
        pytest.param("took 0.3 s; 3.14159265358979 ratio; 1234567890123456.5", id="decimals"),
        pytest.param("epoch 1759651200 ms 1759651200000", id="epochs"),
        pytest.param("host 192.168.100.10:5432", id="ip-port"),
        pytest.param("tokens: 42 max_tokens=600 token_count=3", id="token-counts"),
        pytest.param("card 4111 1111 1111 1112 fails Luhn", id="luhn-invalid"),
        pytest.param("ssn-like 000-12-3456 666-12-3456 912-12-3456", id="invalid-ssn"),
        pytest.param("basic usage; the bearer of news; Basic Authentication", id="prose"),
        pytest.param("postgresql://alice@db.example.com/memories", id="url-user"),
        pytest.param("password authentication failed for user app", id="password-prose"),
    ],
)
def test_redact_text_leaves_benign_text(text: str) -> None:
    """Timestamps, versions, UUIDs, decimals, counts and prose are not masked."""
    assert redact_text(text) == text


# --- keys and values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(key, id=key)
        for key in [
            "password",
            "passwd",
            "pwd",
            "db_password",
            "PGPASSWORD",
            "secret",
            "client_secret",
            "token",
            "access_token",
            "api_key",
            "apikey",
            "api-key",
            "X-Api-Key",
            "apiKey",
            "Authorization",
            "auth",
            "cookie",
            "Set-Cookie",
            "session",
            "sessionid",
            "session_id",
            "private_key",
            "credentials",
            "access_key",
            "dsn",
        ]
    ],
)
def test_secret_keys_mask_text(key: str) -> None:
    """Text and bytes under a secret-named key are masked, whatever its case or affixes."""
    assert redact_value(key, "v4lue") == MASK
    assert redact_value(key, b"v4lue") == MASK
    assert redact_value(key, "") == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("tokens", 42, id="count"),
        pytest.param("max_tokens", 600, id="max-tokens"),
        pytest.param("password", 1234, id="number-under-secret"),
        pytest.param("token_count", "3", id="metadata-suffix"),
        pytest.param("private_key_path", "/etc/k.pem", id="path"),
        pytest.param("author", "ada", id="not-auth"),
        pytest.param("tokenizer", "cl100k", id="not-token"),
    ],
)
def test_non_secret_keys_and_numbers_stay(key: str, value: Any) -> None:
    """Numbers are never masked, and keys that only mention a secret keep their value."""
    assert redact_value(key, value) == value


def test_processor_masks_secret_keys_and_nested_values() -> None:
    """The structlog processor masks secret-named keys, nested dicts and URLs in values."""
    event = {
        "event": "connect",
        "password": "pw1",
        "api_key": "k-123",
        "tokens": 42,
        "nested": {"secret": "s-1", "url": "postgresql://u:pw2@h/d"},
        "items": ["Bearer tok-9"],
        "credentials": {"user": "bob", "pin": ("u-55",)},
    }
    out = RedactSecrets()(None, "info", event)
    flat = repr(out)
    for secret in ("pw1", "k-123", "s-1", "pw2", "tok-9", "bob", "u-55"):
        assert secret not in flat
    assert out["tokens"] == 42


def test_redact_value_rebuilds_containers_and_decodes_bytes() -> None:
    """Lists, tuples, sets and dicts come back as new containers of the same kind."""
    value = {
        "list": ["a@b.example"],
        "tuple": ("123-45-6789",),
        "set": {"x"},
        "frozen": frozenset({"y"}),
        "bytes": b"password=pw \xff",
        "obj": ValueError("postgresql://u:pw@h/d"),
    }
    out = redact_value("payload", value)
    assert out["list"] == ["[REDACTED:email]"]
    assert out["tuple"] == ("[REDACTED:ssn]",)
    assert out["set"] == {"x"} and out["set"] is not value["set"]
    assert out["frozen"] == frozenset({"y"})
    assert out["bytes"] == "password=*** \\xff"
    assert out["obj"] == "ValueError('postgresql://u:***@h/d')"


def test_redact_value_cuts_cycles_and_deep_nesting() -> None:
    """A container holding itself, or nested beyond the depth limit, becomes a marker."""
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    assert redact_value("x", loop) == {"a": 1, "self": "[REDACTED:cycle]"}
    deep: list[Any] = ["leaf"]
    for _ in range(100):
        deep = [deep]
    out = redact_value("x", deep, max_depth=5)
    for _ in range(5):
        out = out[0]
    assert out == "[REDACTED:depth]"


# --- one event, one line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a\nb\r\nc", "a\\nb\\r\\nc", id="cr-lf"),
        pytest.param("\x1b[31mred\x1b[0m", "red", id="ansi-csi"),
        pytest.param("\x1b]0;pwned\x07title", "title", id="ansi-osc"),
        pytest.param("a\x1bcb", "a\\x1bcb", id="lone-esc"),
        pytest.param("a\x00\x7f\x85b", "a\\x00\\x7f\\x85b", id="nul-del-c1"),
        pytest.param("a\u2028b\u2029c", "a\\u2028b\\u2029c", id="line-separators"),
        pytest.param("a\u202eb", "a\\u202eb", id="bidi-override"),
        pytest.param("a\ud800b", "a\\ud800b", id="lone-surrogate"),
        pytest.param("tab\tand ünïcödé ✓", "tab\tand ünïcödé ✓", id="printable-kept"),
    ],
)
def test_sanitize_line_cases(text: str, expected: str) -> None:
    """Controls become visible escapes, ANSI sequences vanish, printable text stays."""
    assert sanitize_line(text) == expected


def test_sanitize_line_truncates_with_a_marker() -> None:
    """Oversized text is cut to the limit and says how much was cut."""
    out = sanitize_line("x" * 10_000, max_chars=100)
    assert out == "x" * 76 + "…[truncated 9924 chars]"
    with pytest.raises(ValueError, match="max_chars"):
        sanitize_line("x", max_chars=10)


class _TwoLineRepr:
    def __repr__(self) -> str:
        return "first\nsecond"


def test_sanitize_lines_processor_escapes_keys_and_nested_values() -> None:
    """Keys, nested strings and odd objects' reprs are made one line too."""
    event = {"event": "a\nb", "k\ney": ["c\rd", {"x\x1b": "e\u2028"}], "n": 3, "o": _TwoLineRepr()}
    out = SanitizeLines()(None, "info", event)
    assert out == {
        "event": "a\\nb",
        "k\\ney": ["c\\rd", {"x\\x1b": "e\\u2028"}],
        "n": 3,
        "o": "first\\nsecond",
    }


# --- hypothesis: planted secrets never survive --------------------------------------

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"


def _text(alphabet: str, low: int, high: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=low, max_size=high or low)


@st.composite
def _secret(draw: st.DrawFn, alphabet: str, low: int, high: int | None = None) -> str:
    """Random text with a "Q" somewhere, so it can never be a piece of benign text."""
    text = draw(_text(alphabet, low - 1, (high or low) - 1))
    at = draw(st.integers(0, len(text)))
    return text[:at] + "Q" + text[at:]


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (1 if i % 2 else 2)
        total += d - 9 if d > 9 else d
    return body + str(-total % 10)


@st.composite
def _card(draw: st.DrawFn) -> tuple[str, list[str]]:
    prefix = draw(st.sampled_from(["4", "51", "55", "34", "37", "6011", "65", "2221"]))
    length = draw(st.integers(13, 19))
    number = _luhn_complete(prefix + draw(_text(string.digits, length - len(prefix) - 1)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    shown = sep.join(number[i : i + 4] for i in range(0, length, 4)) if sep else number
    return shown, [shown]


@st.composite
def _phone(draw: st.DrawFn) -> tuple[str, list[str]]:
    area, exchange = draw(st.integers(200, 999)), draw(st.integers(100, 999))
    line = draw(_text(string.digits, 4))
    e164 = "+" + draw(st.integers(1, 999).map(str)) + draw(_text(string.digits, 7, 11))
    shown = draw(
        st.sampled_from([e164, f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}"])
    )
    return shown, [shown]


@st.composite
def _planted(draw: st.DrawFn) -> tuple[str, list[str]]:
    """One secret of a random family, and the substrings that must not survive."""
    password = draw(_secret(ALNUM + "!$%^*()_+~:@.,;-", 12, 24))
    bare = draw(_secret(ALNUM + "!$%^*()_+~:.,;-/=", 12, 24))
    quoted = draw(_secret(ALNUM + " !$%^*()_+~:.,;&-/=", 12, 24))
    user, host = draw(_text(string.ascii_lowercase, 1, 8)), draw(_text("abcdefgh", 1, 8))
    key = draw(
        st.sampled_from(
            [
                "password",
                "db_password",
                "PGPASSWORD",
                "api_key",
                "X-Api-Key",
                "apikey",
                "pwd",
                "client_secret",
                "access_token",
                "secret",
                "token",
                "auth",
                "session_id",
                "dsn",
                "private_key",
                "credentials",
                "passwd",
                "Authorization",
            ]
        )
    )
    kv = draw(
        st.sampled_from(
            [
                f"{key}={bare}",
                f"{key}: {bare}",
                f'"{key}": "{quoted}"',
                f"'{key}': '{quoted}'",
                f"{key}='{quoted}'",
                f'{key}="{quoted}"',
                f'\\"{key}\\": \\"{quoted}\\"',
            ]
        )
    )
    token68 = draw(_secret(ALNUM + "-._~+/", 16, 40))
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    jwt_parts = [draw(_secret(B64URL, 10, 60)) for _ in range(3)]
    jwt = f"eyJ{jwt_parts[0]}.eyJ{jwt_parts[1]}.{jwt_parts[2]}"
    aws_secret = draw(_secret(B64, 40))
    gh = draw(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"])) + draw(_text(ALNUM, 36))
    pem_lines = [draw(_secret(B64, 64)) for _ in range(draw(st.integers(1, 4)))]
    pem_kind = draw(st.sampled_from(["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "]))
    pem_body = "\n".join(pem_lines)
    hook = draw(_secret(ALNUM, 24))
    email = (
        draw(_text(string.ascii_lowercase + string.digits + "._+-", 1, 16))
        + "@"
        + draw(_text(string.ascii_lowercase + string.digits, 1, 10))
        + "."
        + draw(_text(string.ascii_lowercase, 2, 6))
    )
    ssn = (
        f"{draw(st.integers(1, 899).filter(lambda a: a != 666)):03d}-"
        f"{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"
    )
    families: list[tuple[str, list[str]]] = [
        (f"postgresql://{user}:{password}@{host}.example.com:5432/db", [password]),
        (f"host={host} user={user} password={bare} dbname=x", [bare]),
        (kv, [quoted if "'" in kv or '"' in kv else bare]),
        (
            f"https://{host}.example/cb?user={user}&client_secret={bare.replace('&', '')}&x=1",
            [bare.replace("&", "")],
        ),
        (f"Authorization: Bearer {token68}", [token68]),
        (f"Bearer {token68}", [token68]),
        (f"Authorization: Basic {basic}", [basic]),
        ("sk-" + draw(st.sampled_from(["", "proj-"])) + draw(_text(ALNUM, 32, 48)), []),
        (jwt, [jwt_parts[1]]),
        (
            draw(st.sampled_from(["AKIA", "ASIA"]))
            + draw(_text(string.ascii_uppercase + string.digits, 16)),
            [],
        ),
        (
            draw(
                st.sampled_from(
                    ["aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=", "aws_secret_access_key "]
                )
            )
            + aws_secret,
            [aws_secret],
        ),
        (gh, []),
        ("github_pat_" + draw(_text(ALNUM + "_", 82)), []),
        (
            f"xox{draw(st.sampled_from('abprs'))}-{draw(_text(string.digits, 10, 13))}-"
            + draw(_text(ALNUM, 24)),
            [],
        ),
        (f"https://hooks.slack.com/services/T{hook[:8]}/B{hook[8:16]}/{hook}", [hook]),
        (
            f"-----BEGIN {pem_kind}PRIVATE KEY-----\n{pem_body}\n"
            f"-----END {pem_kind}PRIVATE KEY-----",
            pem_lines,
        ),
        (email, [email]),
        draw(_card()),
        (ssn, [ssn]),
        draw(_phone()),
    ]
    text, cores = draw(st.sampled_from(families))
    return text, cores or [text]


# Benign text cannot form a pattern: lower-case words of at most ten letters (but not the
# auth schemes "bearer" and "basic"), numbers of at most four digits never next to each
# other, no @ : = + - _ / or capitals.
_WORD = _text(string.ascii_lowercase, 1, 10).filter(lambda w: w not in ("bearer", "basic"))
_BENIGN_PIECE = st.builds(
    lambda word, number, punct: f"{word}{punct}" + (f" {number}" if number is not None else ""),
    _WORD,
    st.none() | st.integers(0, 9999),
    st.sampled_from(["", ".", ",", "!", "?", ";", ")"]),
)
# Realistic structured tokens that must stay; one at a time, between words.
_STRUCTURED = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.dates().map(str),
    st.times().map(str),
    st.uuids().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 999)).map(
        lambda v: "v{}.{}.{}".format(*v)
    ),
    st.ip_addresses(v=4).map(str),
    st.integers(946_684_800, 1_900_000_000).map(str),  # epoch seconds 2000–2030
    st.integers(946_684_800_000, 1_900_000_000_000).map(str),  # epoch milliseconds
)
_BENIGN = st.lists(
    st.tuples(_BENIGN_PIECE, st.none() | _STRUCTURED).map(
        lambda p: p[0] + (f" {p[1]} word" if p[1] is not None else "")
    ),
    max_size=8,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_BENIGN, _planted()), min_size=1, max_size=6), _BENIGN)
def test_planted_secrets_never_survive(
    pieces: list[tuple[str, tuple[str, list[str]]]], tail: str
) -> None:
    """Secrets of every family planted among benign text are all masked."""
    text = " ".join(f"{benign} {secret}" for benign, (secret, _) in pieces) + " " + tail
    out = redact_text(text)
    for _, (_, cores) in pieces:
        for core in cores:
            assert core not in out
    assert redact_text(out) == out


@settings(max_examples=300, deadline=None)
@given(_BENIGN)
def test_benign_text_is_unchanged(text: str) -> None:
    """Words, short numbers, timestamps, dates, UUIDs, decimals and versions stay as they are."""
    assert redact_text(text) == text


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(
            st.sampled_from(["password", "tokens", "url", "x", "api_key"]) | st.text(),
            children,
            max_size=4,
        )
        | st.frozensets(st.text(), max_size=3)
    ),
    max_leaves=30,
)


@given(st.text(), _VALUES)
def test_redact_value_never_mutates_its_input(key: str, value: Any) -> None:
    """Redaction returns new data and leaves the input exactly as it was."""
    before = copy.deepcopy(value)
    redact_value(key, value)
    assert value == before


@given(st.text(), st.integers(64, 400))
def test_sanitize_line_always_yields_one_safe_line(text: str, max_chars: int) -> None:
    """Any text becomes one line of printable characters (or TAB) within the limit."""
    out = sanitize_line(text, max_chars=max_chars)
    assert len(out) <= max_chars
    assert len(out.splitlines()) <= 1
    assert not any(
        unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs") and ch != "\t" for ch in out
    )
    if len(text) <= max_chars and text.isprintable():
        assert out == text


@given(
    st.text(
        st.sampled_from(
            [
                "\x1b",
                "[",
                "]",
                "3",
                "1",
                ";",
                "m",
                "\x07",
                "\\",
                "\n",
                "a",
                "\u2028",
                "\x9b",
                "\x9c",
            ]
        ),
        max_size=60,
    )
)
def test_sanitize_line_handles_escape_soup(text: str) -> None:
    """Fragments of ANSI sequences never leave an ESC or a line break behind."""
    out = sanitize_line(text)
    assert "\x1b" not in out and "\x9b" not in out and len(out.splitlines()) <= 1


# --- the logging pipeline end to end ---------------------------------------------------


@pytest.fixture
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


INJECTION = "ingest\n2026-01-01 [critical] forged \x1b[31mred\x1b[0m \x1b]0;t\x07 a\u2028b"
PLANTED = {
    "password": "pw-plant-1",
    "url": "postgresql://u:pw-plant-2@h/d",
    "note": "mail bob@example.com card 4111 1111 1111 1111 key sk-AbCdEfGhIjKlMnOpQrStUv12",
}


@pytest.mark.usefixtures("clean_logging")
@pytest.mark.parametrize(
    "fmt", [pytest.param(LogFormat.JSON, id="json"), pytest.param(LogFormat.CONSOLE, id="console")]
)
def test_pipeline_writes_one_line_without_secrets(fmt: LogFormat) -> None:
    """An event with secrets and a line/ANSI injection is written as one clean line."""
    out = io.StringIO()
    configure_logging(fmt=fmt, stream=out)
    get_logger("t").info(INJECTION, **PLANTED)
    logging.getLogger("psycopg").warning(INJECTION + " password=pw-plant-3")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    text = out.getvalue()
    for secret in (
        "pw-plant-1",
        "pw-plant-2",
        "pw-plant-3",
        "bob@example.com",
        "4111 1111",
        "sk-AbCd",
    ):
        assert secret not in text
    assert "\x1b" not in text and "\\u001b" not in text and "\u2028" not in text
    if fmt is LogFormat.JSON:
        assert json.loads(lines[0])["event"].startswith("ingest\\n2026-01-01 [critical] forged red")
