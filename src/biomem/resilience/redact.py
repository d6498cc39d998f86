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

The patterns live in :mod:`biomem.resilience._patterns`; the walk over values,
:func:`sanitize_line` and :class:`SanitizeLines` in
:mod:`biomem.resilience._sanitize`. Import them all from here.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from biomem.resilience._patterns import (
    _AUTH,
    _AWS_SECRET,
    _COOKIE,
    _DIGIT_RUN,
    _DIGITS,
    _E164,
    _EMAIL,
    _KV,
    _KV_HINT,
    _PEM,
    _SLACK_WEBHOOK,
    _SSN,
    _TIMESTAMP,
    _TOKEN_HINTS,
    _TOKENS,
    _URL_PASSWORD,
    _US_PHONE,
    MASK,
    _auth,
    _cards,
    _e164,
    _kv,
    _names_secret,
    _tag,
)
from biomem.resilience._sanitize import (
    _META_KEYS,
    _PLAIN,
    DEFAULT_MAX_DEPTH,
    SanitizeLines,
    _walk,
    sanitize_line,
)
from biomem.resilience._sanitize import DEFAULT_MAX_CHARS as DEFAULT_MAX_CHARS

__all__ = [
    "MASK",
    "RedactSecrets",
    "SanitizeLines",
    "mask_url",
    "redact_text",
    "redact_value",
    "sanitize_line",
]


@functools.lru_cache(maxsize=4096)
def _key_info(key: str) -> tuple[str, bool]:
    """Return (key with secrets masked, whether the key names a secret); keys repeat."""
    return redact_text(key), _names_secret(key)


# --- free text --------------------------------------------------------------------

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


# --- values and events ------------------------------------------------------------


def redact_value(key: str, value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Return ``value`` redacted as if found under ``key``, never mutating it.

    Text and bytes under a secret-named key (or anywhere inside a container
    under one) become :data:`MASK`; other text goes through :func:`redact_text`;
    dict keys are redacted too. Bytes are decoded leniently and returned as text.
    """
    return _walk(value, redact_text, _key_info, _key_info(str(key))[1], max_depth, [])


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
