"""The optional log file (BIOMEM_LOG_FILE): a JSON-lines copy of the log, rotated on demand.

The logging pipeline renders every event once more as JSON, after redaction
and sanitising, and appends it here, whatever the console format is. Rotation
renames the file with a UTC timestamp, opens a new one, and deletes the
oldest rotated files beyond ``keep``; recovery's "rotate logs" action calls
it (for instance when the disk of the data directory runs full).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

__all__ = ["LogFile", "RotationReport"]


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did."""

    path: str  # the live file, new and empty
    rotated_to: str  # where the previous content now is
    rotated_bytes: int
    removed: tuple[str, ...]  # rotated files deleted beyond ``keep``
    freed_bytes: int  # their size


class LogFile:
    """One append-only file of log lines, safe to write from many threads.

    Args:
        path: the file; its directory is created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stream: IO[str] = self._open()

    def _open(self) -> IO[str]:
        # Line-buffered: a line is on disk when the event is logged, even on a crash.
        return self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, line: str) -> None:
        """Append one line (a newline is added)."""
        with self._lock:
            if not self._stream.closed:
                self._stream.write(line + "\n")

    def rotated_files(self) -> list[Path]:
        """The rotated files of this log, oldest first."""
        prefix = self.path.name + "."
        found = [
            p
            for p in self.path.parent.iterdir()
            if p.name.startswith(prefix) and p.name[len(prefix) :].replace("T", "").isdigit()
        ]
        return sorted(found, key=lambda p: p.name)

    def rotate(self, *, keep: int) -> RotationReport:
        """Move the current file aside, start a new one, keep at most ``keep`` rotated files.

        Raises:
            OSError: the file could not be renamed or reopened (the old one stays in use).
        """
        if keep < 1:
            raise ValueError("keep must be at least 1")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        with self._lock:
            self._stream.flush()
            size = self.path.stat().st_size if self.path.exists() else 0
            self.path.replace(target)
            try:
                fresh = self._open()
            except OSError:
                target.replace(self.path)  # put it back: never lose the log
                raise
            self._stream.close()
            self._stream = fresh
        removed: list[str] = []
        freed = 0
        rotated = self.rotated_files()
        for old in rotated[: max(0, len(rotated) - keep)]:
            try:
                freed += old.stat().st_size
                old.unlink()
            except FileNotFoundError:
                continue
            removed.append(str(old))
        return RotationReport(
            path=str(self.path),
            rotated_to=str(target),
            rotated_bytes=size,
            removed=tuple(removed),
            freed_bytes=freed,
        )

    def close(self) -> None:
        with self._lock:
            self._stream.close()
