"""One redactor for everything that leaves the process.

Log events, error events, dead-letter records, alerts and API responses all pass
through these functions, so a secret masked in one place is masked in all.

Values under secret-named keys (``password``, ``db_password``, ``X-Api-Key``,
``Set-Cookie``, ``session_id``, ``dsn`` …) become :data:`MASK` when they are
text or bytes; numbers stay, so ``max_tokens=600`` survives. Inside any text:

* ``scheme://user:***@host``, ``password=***`` (libpq, query strings, headers,
  JSON), ``Cookie: ***``: where a key names the secret, :data:`MASK` is used.
* Typed markers ``[REDACTED:<kind>]`` elsewhere: ``private_key`` (PEM blocks),
  ``slack_webhook`` (path after ``hooks.slack.com/services/``), ``bearer`` and
  ``basic`` (the scheme word stays), ``jwt``, ``api_key`` (``sk-…``,
  ``sk_live_…``, ``AIza…``), ``aws_key_id`` (AKIA/ASIA), ``aws_secret``,
  ``github_token``, ``slack_token``, ``email``, ``card`` (Luhn-valid 13–19
  digits starting 2–6), ``ssn``, ``phone`` (E.164 and North-American forms).
* Containers deeper than ``max_depth`` or containing themselves become
  ``[REDACTED:depth]`` / ``[REDACTED:cycle]``.

:func:`sanitize_line` keeps one event on one line; :class:`RedactSecrets` and
:class:`SanitizeLines` are structlog processors (plain callables, no structlog
import) to place in that order just before the renderer.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MASK",
    "RedactSecrets",
    "SanitizeLines",
    "mask_url",
    "redact_text",
    "redact_value",
    "sanitize_line",
]

MASK = "***"
DEFAULT_MAX_DEPTH = 20
DEFAULT_MAX_CHARS = 8192
_MIN_MAX_CHARS = 64  # room for the truncation marker and some text


def _tag(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# --- secret-named keys -----------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SECRET_WORDS = _words(
    "password passwd pwd pass passphrase secret secrets token apikey authorization auth"
    " cookie cookies session sessionid credential credentials creds dsn privatekey"
    " accesskey secretkey jwt bearer otp"
)
_SECRET_PAIRS = frozenset(
    (w, "key") for w in ("api", "private", "access", "account", "signing", "encryption", "master")
)
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "accesskey", "sessionid")
_SECRET_PREFIXES = ("password", "passwd", "apikey")
# A trailing word that describes the secret rather than holding it:
# token_count, password_file, private_key_path, auth_url stay readable.
_METADATA_WORDS = _words(
    "count counts num number total max min limit limits len length size used usage ttl type"
    " kind mode method scheme url uri endpoint host file path dir env var name enabled"
    " required present configured provided valid expires expiry expiration age error errors"
    " policy version source field"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


@functools.lru_cache(maxsize=4096)
def _key_info(key: str) -> tuple[str, bool]:
    """Return (key with secrets masked, whether the key names a secret); keys repeat."""
    words = [w.lower() for w in _NON_ALNUM.split(_CAMEL.sub("_", key)) if w]
    secret = not (len(words) > 1 and words[-1] in _METADATA_WORDS) and any(
        w in _SECRET_WORDS
        or w.endswith(_SECRET_SUFFIXES)
        or w.startswith(_SECRET_PREFIXES)
        or (w, nxt) in _SECRET_PAIRS
        for w, nxt in itertools.pairwise([*words, ""])
    )
    return redact_text(key), secret


# --- patterns in free text ---------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END[A-Z0-9 ]{0,40}-----|.*)",  # unterminated: mask to the end
    re.DOTALL,
)
# The password runs to the last "@" before the host: unencoded "@" in it stays masked.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@?#]*:)[^\s/?#]+@")
_SLACK_WEBHOOK = re.compile(r"(?P<head>hooks\.slack\.com/(?:services|workflows|triggers)/)[\w/-]+")
_COOKIE = re.compile(r"(?P<key>(?<![\w-])(?:set-)?cookie[ \t]*:[ \t]*)[^\s\"'][^\r\n\"']*", re.I)
_KV = re.compile(
    r"(?P<key>(?:pass(?:word|wd|phrase)|(?<![a-z])pass|pwd|secret|token|api[_-]?key"
    r"|(?:access|private|account|signing|encryption|master|secret)[_-]?key|authorization"
    r"|(?<![a-z])auth|cookie|session(?:[_-]?id)?|credentials?|creds|dsn)"
    r"(?:\\?[\"'])?\s*[:=]\s*)"
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|ntlm)\s+)?"
    r"(?P<val>\\\"(?:[^\"\\]|\\[^\"])*(?:\\\")?|\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?"
    r"|[^\s&\"'][^\s&]*)",
    re.I,
)
_KV_HINT = re.compile(r"pass|pwd|secret|token|key|auth|cookie|session|cred|dsn")  # on lower()
_AUTH = re.compile(
    r"\b(?P<scheme>[Bb]earer|BEARER|[Bb]asic|BASIC)[ \t]+(?P<tok>[\w.~+/-]+=*)", re.A
)
_AWS_SECRET = re.compile(
    r"(?P<key>aws_?secret_?access_?key[\"']?\s*[:=]?\s*[\"']?)[A-Za-z0-9/+=]{40}(?![\w/+=])", re.I
)
_TOKENS = re.compile(
    r"(?<![\w-])(?:(?P<jwt>eyJ[\w-]{2,}\.[\w-]{2,}\.[\w-]*)"
    r"|(?P<api_key>sk-[\w-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|AIza[\w-]{35})"
    r"|(?P<aws_key_id>A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9]))"
    r"|(?P<github_token>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})"
    r"|(?P<slack_token>xox[abprs]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}))",
    re.A,
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])(?<!//)[\w.%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])", re.A
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d\d-(?!0000)\d{4}(?![\w-])", re.A)
# Digit groups joined by single spaces or dashes; not part of a decimal, word or UUID.
_DIGIT_RUN = re.compile(r"(?<![\w.+-])(?=(?:[ -]?\d){13})\d++(?:[ -]\d++)*+(?![\w]|\.\d|-\w)", re.A)
_DIGITS = re.compile(r"\d+", re.A)
_TOKEN_HINTS = ("eyJ", "sk-", "k_", "AIza", "IA", "gh", "github_pat_", "xox", "xapp-")
_E164 = re.compile(r"(?<![\w+])\+[1-9]\d{0,14}(?:[ -]?\(\d{1,4}\)|[ -]\d{1,14}){0,6}(?!\w)", re.A)
_US_PHONE = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[.-])\d{3}[.-]\d{4}(?![\w-]|\.\d)",
    re.A,
)


def _kv(m: re.Match[str]) -> str:
    val = m["val"]
    quote = next((q for q in ('\\"', '"', "'") if val.startswith(q)), "")
    return f"{m['key']}{m['scheme'] or ''}{quote}{MASK}{quote}"


def _auth(m: re.Match[str]) -> str:
    scheme, tok = m["scheme"], m["tok"]
    # "Bearer x" is always a credential; "basic usage" or "the bearer of" is prose.
    credential = (
        scheme == "Bearer"
        or len(tok) >= 20
        or (len(tok) >= 8 and not (tok.isalpha() and (tok[1:].islower() or tok.isupper())))
    )
    return f"{scheme} {_tag(scheme.lower())}" if credential else m.group()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _cards(m: re.Match[str]) -> str:
    """Mask the Luhn-valid card numbers laid out as cards inside a run of digit groups."""
    run = m.group()
    groups = [(g.start(), g.end()) for g in _DIGITS.finditer(run)]
    found: list[tuple[int, int, int]] = []
    for i, (start, end) in enumerate(groups):
        if end - start != 4 and not 13 <= end - start <= 19:
            continue  # every usual layout starts with four digits or is one block
        lens: list[int] = []
        for a, b in groups[i : i + 19]:  # 19 digits never span more than 19 groups
            lens.append(b - a)
            n = sum(lens)
            if n > 19:
                break
            # One block, fours (4-4-4-4, 4-4-4-4-3 …) or 4-6-5 / 4-6-4: a window that
            # straddles unrelated numbers ("3456 666-12-3456") is chance, not a card.
            usual = (
                len(lens) == 1
                or lens in ([4, 6, 5], [4, 6, 4])
                or (set(lens[:-1]) == {4} and lens[-1] <= 4)
            )
            if n < 13 or not usual:
                continue
            digits = "".join(run[x:y] for x, y in groups[i : i + len(lens)])
            if digits[0] in "23456" and _luhn(digits):
                found.append((-n, i, i + len(lens) - 1))
    used = [False] * len(groups)
    taken: list[tuple[int, int]] = []
    for _, i, j in sorted(found):  # longest first, then leftmost
        if not any(used[i : j + 1]):
            used[i : j + 1] = [True] * (j + 1 - i)
            taken.append((i, j))
    parts, pos = [], 0
    for i, j in sorted(taken):
        parts += [run[pos : groups[i][0]], _tag("card")]
        pos = groups[j][1]
    return "".join([*parts, run[pos:]])


def _e164(m: re.Match[str]) -> str:
    """Mask at most 15 digits: a number that merely follows the phone stays."""
    text, count, end = m.group(), 0, 0
    for g in _DIGITS.finditer(text):
        if count + len(g.group()) > 15:
            break
        count += len(g.group())
        end = g.end() + (text[g.end() : g.end() + 1] == ")")
    return _tag("phone") + text[end:] if count >= 8 else text


# Short strings found clean recently (event names, stages, levels): log fields repeat,
# so most calls end here. Only clean text is kept, never a secret.
_CLEAN: dict[str, None] = {}
_CLEAN_MAX_LEN, _CLEAN_MAX_SIZE = 200, 4096


def redact_text(text: str) -> str:
    """Mask credentials and personal data inside free text; idempotent."""
    if len(text) < 5 or text in _CLEAN or _TIMESTAMP.fullmatch(text):
        return text
    out = text
    # Each family runs only when a cheap substring test says it could match.
    if "-----BEGIN" in out:
        out = _PEM.sub(_tag("private_key"), out)
    if "://" in out and "@" in out:
        out = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", out)
    if "hooks.slack" in out:
        out = _SLACK_WEBHOOK.sub(lambda m: m["head"] + _tag("slack_webhook"), out)
    low = out.lower()
    if (":" in out or "=" in out) and _KV_HINT.search(low):
        out = _KV.sub(_kv, _COOKIE.sub(lambda m: m["key"] + MASK, out))
    if "bearer" in low or "basic" in low:
        out = _AUTH.sub(_auth, out)
    if "secret" in low:
        out = _AWS_SECRET.sub(lambda m: m["key"] + _tag("aws_secret"), out)
    if any(hint in out for hint in _TOKEN_HINTS):
        out = _TOKENS.sub(lambda m: _tag(m.lastgroup or "token"), out)
    if "@" in out:
        out = _EMAIL.sub(_tag("email"), out)
    if _DIGITS.search(out):
        if "-" in out:
            out = _SSN.sub(_tag("ssn"), out)
        if len(out) >= 13:
            out = _DIGIT_RUN.sub(_cards, out)
        if "+" in out:
            out = _E164.sub(_e164, out)
        if "-" in out or "." in out or ")" in out:
            out = _US_PHONE.sub(_tag("phone"), out)
    if out == text and len(text) <= _CLEAN_MAX_LEN:
        if len(_CLEAN) >= _CLEAN_MAX_SIZE:
            _CLEAN.clear()
        _CLEAN[text] = None
    return out


# --- walking values ---------------------------------------------------------------

_PLAIN = frozenset({int, float, bool, type(None)})
_ATOMIC = (int, float, complex, Decimal, dt.date, dt.time, dt.timedelta, uuid.UUID, Enum)
# structlog's own bookkeeping: exc_info must reach format_exc_info intact.
_META_KEYS = frozenset({"exc_info", "_record", "_from_structlog"})


_Keys = Callable[[str], tuple[str, bool]]


def _walk(
    value: Any, text: Callable[[str], str], keys: _Keys, secret: bool, depth: int, path: list[int]
) -> Any:
    """Return ``value`` with ``text`` applied to every string, in new containers.

    ``keys`` maps a dict key to (shown key, whether it names a secret); ``path``
    holds the ids of the containers above, to cut cycles.
    """
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        if secret:
            return MASK if value else value
        out = text(value)
        return value if out == value else out  # keeps str subclasses (enums) intact
    if isinstance(value, bytes | bytearray | memoryview):
        decoded = bytes(value).decode("utf-8", "backslashreplace")
        return _walk(decoded, text, keys, secret, depth, path)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if depth <= 0:
            return _tag("depth")
        if id(value) in path:
            return _tag("cycle")
        path.append(id(value))
        try:
            if isinstance(value, Mapping):
                result: dict[Any, Any] = {}
                for k, v in value.items():
                    shown, named = keys(k) if isinstance(k, str) else (k, False)
                    result[shown] = _walk(v, text, keys, secret or named, depth - 1, path)
                return result
            items = [_walk(v, text, keys, secret, depth - 1, path) for v in value]
        finally:
            path.pop()
        if isinstance(value, list):
            return items
        if isinstance(value, tuple):
            return tuple(items)
        return frozenset(items) if isinstance(value, frozenset) else set(items)
    if isinstance(value, _ATOMIC):
        return value
    if secret:
        return MASK
    # Renderers print other objects with repr(): judge that text, keep the object if clean.
    rendered = repr(value)
    out = text(rendered)
    return value if out == rendered else out


def redact_value(key: str, value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Return ``value`` redacted as if found under ``key``, never mutating it.

    Text and bytes under a secret-named key (or anywhere inside a container
    under one) become :data:`MASK`; other text goes through :func:`redact_text`;
    dict keys are redacted too. Bytes are decoded leniently and returned as text.
    """
    return _walk(value, redact_text, _key_info, _key_info(str(key))[1], max_depth, [])


# --- one event, one line -----------------------------------------------------------

_UNSAFE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC: titles, hyperlinks
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    # C0 but TAB, DEL, C1, line/paragraph separators, bidi overrides, lone surrogates
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if len(ch) > 1:
        return ""  # an escape sequence: drop it
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _truncated(count: int) -> str:
    return f"…[truncated {count} chars]"


def sanitize_line(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` as one printable line of at most ``max_chars`` characters.

    ANSI CSI/OSC sequences are dropped; CR, LF, other controls but TAB, DEL, C1,
    U+2028/U+2029, bidi overrides and lone surrogates become visible escapes
    (``\\n``, ``\\x1b``, ``\\u2028``). Longer text ends in ``…[truncated N chars]``,
    N counting the escaped characters cut (plus any raw tail never examined).
    """
    if max_chars < _MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be at least {_MIN_MAX_CHARS}, got {max_chars}")
    if len(text) <= max_chars and text.isprintable():
        return text
    # Escaping at most sextuples a character, so this window always fills the line.
    window = text[: max_chars * 6]
    out = _UNSAFE.sub(_escape, window) if _UNSAFE.search(window) else window
    unseen = len(text) - len(window)
    if len(out) <= max_chars and not unseen:
        return out
    total = len(out) + unseen
    keep = min(len(out), max_chars - len(_truncated(total)))
    return out[:keep] + _truncated(total - keep)


# --- structlog processors -------------------------------------------------------------


class RedactSecrets:
    """structlog processor: redact every key and value of an event.

    Place it after ``format_exc_info`` (exceptions are text by then) and after
    any processor that adds fields, so nothing added later escapes it.
    """

    def __init__(self, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self._max_depth = max_depth

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        out: dict[str, Any] = {}
        depth = self._max_depth
        for key, value in event_dict.items():
            if key in _META_KEYS or not isinstance(key, str):
                out[key] = value
                continue
            new_key, secret = _key_info(key)
            kind = type(value)
            # Inline the two commonest cases: a number, a short clean string seen before.
            if kind in _PLAIN or (kind is str and not secret and value in _CLEAN):
                out[new_key] = value
            else:
                out[new_key] = _walk(value, redact_text, _key_info, secret, depth, [])
        return out


class SanitizeLines:
    """structlog processor: make every key and string value one safe line.

    Runs before JSON and console rendering alike: JSON escapes newlines, but a
    console does not, and terminals still act on ANSI sequences and U+2028.
    """

    def __init__(
        self, *, max_chars: int = DEFAULT_MAX_CHARS, max_depth: int = DEFAULT_MAX_DEPTH
    ) -> None:
        sanitize_line("", max_chars=max_chars)  # validates max_chars
        self._max_depth, self._max_chars = max_depth, max_chars
        self._line: Callable[[str], str] = functools.partial(sanitize_line, max_chars=max_chars)
        self._keys: _Keys = lambda key: (self._line(key), False)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        line, limit = self._line, self._max_chars
        out: dict[str, Any] = {}
        for key, value in event_dict.items():
            if key in _META_KEYS or not isinstance(key, str):
                out[key] = value
                continue
            # sanitize_line's own fast path, inlined: this runs for every field of every event.
            if len(key) > limit or not key.isprintable():
                key = line(key)
            kind = type(value)
            if kind in _PLAIN or (kind is str and len(value) <= limit and value.isprintable()):
                out[key] = value
            else:
                out[key] = _walk(value, line, self._keys, False, self._max_depth, [])
        return out


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """Return ``url`` with its password and any secret in it masked.

    Args:
        url: any URL; a string that does not parse is masked whole.
        hide_path: also mask path and query (webhook URLs carry their token there).
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    path, query = parts.path, parts.query
    if hide_path:
        path = "/" + MASK if path not in ("", "/") else path
        query = MASK if query else ""
    return redact_text(urlunsplit((parts.scheme, netloc, path, query, "")))
