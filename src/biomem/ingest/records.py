"""Validation of raw records into memories, or into reasons to quarantine them.

A record is accepted only whole: content present, valid UTF-8 (no lone
surrogates, no NUL), within the size limit, timestamps parseable, metadata an
object. Anything else becomes a :class:`Rejected` carrying the reason and an
excerpt, so nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EXCERPT_BYTES",
    "InvalidRecord",
    "Memory",
    "Rejected",
    "excerpt",
    "parse_jsonl_line",
    "validate_record",
]

EXCERPT_BYTES = 4096
_MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
_KNOWN_KEYS = {"id", "content", "created_at", "updated_at", "metadata"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """One valid memory, ready to be written."""

    source: str
    source_id: str
    content: str
    created_at: datetime
    updated_at: datetime
    metadata_json: str  # canonical JSON: sorted keys, no spaces
    content_hash: str

    @property
    def uid(self) -> str:
        return f"{self.source}:{self.source_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """One bad record and why it was refused."""

    source: str
    location: str
    reason: str
    raw: str
    line_no: int | None = None
    record_id: str | None = None

    @property
    def raw_hash(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8", "backslashreplace")).hexdigest()


class InvalidRecord(ValueError):
    """A record failed validation; the message is the quarantine reason."""


def excerpt(raw: bytes | str) -> str:
    """Return up to EXCERPT_BYTES of ``raw`` as text, escaping invalid bytes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    text = raw[:EXCERPT_BYTES].decode("utf-8", "backslashreplace")
    # Lone surrogates cannot be stored; escape them too.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _timestamp(value: Any, field: str) -> datetime:
    if value is None:
        raise InvalidRecord(f"missing {field}")
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise InvalidRecord(f"bad timestamp in {field}: not a time")
    elif isinstance(value, int | float):
        try:
            parsed = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRecord(f"bad timestamp in {field}: {value!r} out of range") from None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidRecord(
                f"bad timestamp in {field}: {value[:64]!r} is not ISO 8601"
            ) from None
    else:
        raise InvalidRecord(f"bad timestamp in {field}: {type(value).__name__} is not a time")
    if parsed.tzinfo is None:
        # Documented: times without an offset are UTC.
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if not _MIN_TIME <= parsed < _MAX_TIME:
        raise InvalidRecord(f"bad timestamp in {field}: {parsed.isoformat()} outside 1900..2200")
    return parsed


def _text_ok(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecord(f"invalid UTF-8 in {what} (lone surrogate)") from None
    if "\x00" in value:
        raise InvalidRecord(f"{what} contains a NUL character")


def validate_record(
    *,
    source: str,
    source_id: Any,
    content: Any,
    created_at: Any,
    updated_at: Any,
    metadata: Any,
    max_content_bytes: int,
    extra: Mapping[str, Any] | None = None,
) -> Memory:
    """Build a :class:`Memory` or raise :class:`InvalidRecord` whose message is the reason.

    ``extra`` (unknown top-level keys of a JSONL record) is kept inside the
    metadata rather than dropped; keys of ``metadata`` win on a clash.
    """
    if content is None:
        raise InvalidRecord("no content")
    if not isinstance(content, str):
        raise InvalidRecord(f"content is {type(content).__name__}, not text")
    if not content.strip():
        raise InvalidRecord("no content (empty or blank)")
    _text_ok(content, "content")
    size = len(content.encode("utf-8"))
    if size > max_content_bytes:
        raise InvalidRecord(f"content is {size} bytes, over the limit of {max_content_bytes}")
    created = _timestamp(created_at, "created_at")
    updated = created if updated_at is None else _timestamp(updated_at, "updated_at")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidRecord(f"metadata is {type(metadata).__name__}, not an object")
    if extra:
        metadata = {**extra, **metadata}
    metadata_json = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _text_ok(metadata_json, "metadata")
    if len(metadata_json.encode("utf-8")) > max_content_bytes:
        raise InvalidRecord(f"metadata is over the limit of {max_content_bytes} bytes")
    ident = _identifier(source_id, content, created)
    digest = hashlib.sha256(
        json.dumps([content, created.isoformat(), metadata_json], ensure_ascii=False).encode()
    ).hexdigest()
    return Memory(
        source=source,
        source_id=ident,
        content=content,
        created_at=created,
        updated_at=updated,
        metadata_json=metadata_json,
        content_hash=digest,
    )


def _identifier(value: Any, content: str, created: datetime) -> str:
    if value is None:
        # No id given: derive one from what the memory is, so the same line
        # ingested twice is still one memory.
        seed = f"{created.isoformat()}\x1f{content}".encode()
        return "h-" + hashlib.sha256(seed).hexdigest()[:24]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRecord(f"id is {type(value).__name__}, not text or a whole number")
    ident = str(value).strip()
    if not ident:
        raise InvalidRecord("id is empty")
    if len(ident) > 256:
        raise InvalidRecord("id is longer than 256 characters")
    _text_ok(ident, "id")
    return ident


def parse_jsonl_line(
    raw: bytes, *, line_no: int, location: str, max_content_bytes: int
) -> Memory | Rejected:
    """Parse one line of a JSONL file into a memory or a rejection."""

    def reject(reason: str, record_id: str | None = None) -> Rejected:
        return Rejected(
            source="jsonl",
            location=f"{location}:{line_no}",
            line_no=line_no,
            record_id=record_id,
            reason=reason,
            raw=excerpt(raw),
        )

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(f"invalid UTF-8 at byte {exc.start}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return reject(f"malformed JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return reject("malformed JSON: nested too deeply")
    if not isinstance(record, dict):
        return reject(f"a line must hold a JSON object, not {type(record).__name__}")
    record_id = record.get("id")
    shown_id = excerpt(str(record_id))[:256] if isinstance(record_id, str | int) else None
    extra = {key: value for key, value in record.items() if key not in _KNOWN_KEYS}
    try:
        return validate_record(
            source="jsonl",
            source_id=record_id,
            content=record.get("content"),
            created_at=record.get("created_at"),
            updated_at=record.get("updated_at"),
            metadata=record.get("metadata"),
            max_content_bytes=max_content_bytes,
            extra=extra,
        )
    except InvalidRecord as exc:
        return reject(str(exc), shown_id)
