"""Secret redaction for anything that leaves the process.

Two tools: :func:`mask_url` shows a URL with its password (and, for URLs
that carry their secret in the path, the path) masked; :class:`RedactSecrets`
is a structlog processor that masks values under secret-looking keys and
passwords embedded in URLs inside any string of an event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["MASK", "RedactSecrets", "mask_url", "redact_text", "redact_value"]

MASK = "***"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key|cookie|dsn)",
    re.IGNORECASE,
)
# scheme://user:password@host  → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
# key=value pairs in libpq conninfo strings and query strings
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access_token)\s*[=:]\s*)(?P<val>[^\s&;,'\"]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<tok>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """Return ``url`` with its password masked.

    Args:
        url: any URL; a string that does not parse is masked whole.
        hide_path: also mask path and query (webhook URLs carry their token there).
    """
    try:
        parts: SplitResult = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:{MASK}@{host}"
    path, query = parts.path, parts.query
    if hide_path:
        path = "/" + MASK if path not in ("", "/") else path
        query = MASK if query else ""
    else:
        query = _KV_SECRET.sub(lambda m: m.group("key") + MASK, query)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def redact_text(text: str) -> str:
    """Mask URL passwords, ``password=...`` pairs and bearer tokens inside free text."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KV_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return _BEARER.sub(lambda m: m.group("head") + MASK, text)


def redact_value(key: str, value: Any) -> Any:
    """Redact one value, masking it whole when ``key`` names a secret."""
    # Only text can be a credential; numbers under a key such as "tokens" stay.
    if _SECRET_KEY.search(key) and isinstance(value, str | bytes) and value:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    return value


class RedactSecrets:
    """structlog processor: mask secrets in every field of an event.

    Exceptions rendered into the event (``exception``) are strings by the time
    this runs when placed after ``format_exc_info``; they are redacted too.
    """

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = redact_value(key, event_dict[key])
        return event_dict
