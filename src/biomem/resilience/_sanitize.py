"""Making event values safe to emit: the copying walk, and one event on one line.

:func:`_walk` rebuilds a value with a text function applied to every string and
a key function to every dict key, masking what sits under a secret-named key
and cutting deep or cyclic containers; both structlog processors use it.
:func:`sanitize_line` makes one string a safe line (log injection, terminal
escapes); :class:`SanitizeLines` applies it to every key and string value.
Import these from :mod:`biomem.resilience.redact`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from decimal import Decimal
from enum import Enum
from typing import Any

from biomem.resilience._patterns import MASK, _tag

__all__ = ["DEFAULT_MAX_CHARS", "DEFAULT_MAX_DEPTH", "SanitizeLines", "sanitize_line"]

DEFAULT_MAX_DEPTH = 20
DEFAULT_MAX_CHARS = 8192
_MIN_MAX_CHARS = 64  # room for the truncation marker and some text


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


# --- the structlog processor ---------------------------------------------------------


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
