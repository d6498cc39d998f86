"""The processes biomem itself starts, and the only ones recovery may ever signal.

Every command biomem runs (the configured Ollama restart command, any
worker) is started here with :meth:`ProcessRegistry.spawn`: an argv list,
never a shell, its output spooled to a file of biomem's own temporary
directory, its pid recorded together with the process's start time (psutil
``create_time``) and a deadline. Nobody waits for it: the caller goes on,
and the command's end is collected later with :meth:`ProcessRegistry.reap`
(exit code, how long, the tail of its output). One still running past its
deadline is *stuck* — the decision takes ``now`` (clock seconds) and so is
tested on a fake clock — and the ``workers_stuck`` rule terminates it.

Terminating checks the pid and the start time, and goes through the
``Popen`` object that has not reaped the child yet, so a pid the kernel has
meanwhile given to another process is never signalled: anything not in this
registry is refused. Termination is SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from biomem.logging import get_logger
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.redact import redact_text

__all__ = [
    "TEMP_PREFIX",
    "CommandResult",
    "ProcessRegistry",
    "TerminateReport",
    "WorkerInfo",
    "own_temp_dir",
]

log = get_logger(__name__)

TEMP_PREFIX = "biomem-"  # every temporary file biomem writes starts with this
_OUTPUT_TAIL_CHARS = 2000


def own_temp_dir(data_dir: Path) -> Path:
    """biomem's own temporary directory (command output spools), under the data directory."""
    return data_dir / "tmp"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process biomem started."""

    pid: int
    purpose: str
    program: str  # argv[0]
    started: float  # clock seconds
    deadline: float  # clock seconds; still running after it means stuck
    create_time: float  # psutil's start time, to tell this process from a pid reuse


@dataclass(frozen=True, slots=True)
class TerminateReport:
    """What terminating did, by pid."""

    terminated: tuple[int, ...] = ()  # ended after SIGTERM
    killed: tuple[int, ...] = ()  # needed SIGKILL
    already_ended: tuple[int, ...] = ()
    refused: tuple[int, ...] = ()  # not started by biomem, or the pid was reused


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How one process biomem started ended."""

    info: WorkerInfo
    returncode: int  # negative: the signal that ended it
    overdue: bool  # it still ran when its deadline had passed
    ended_by: str | None  # SIGTERM or SIGKILL when biomem ended it, else None
    seconds: float  # from its start until its end was seen
    output: str  # the tail of its standard output and error, redacted

    @property
    def pid(self) -> int:
        return self.info.pid


@dataclass(slots=True)
class _Entry:
    info: WorkerInfo
    popen: subprocess.Popen[bytes]
    output: Path
    handle: IO[bytes] | None
    started_s: float  # time.monotonic(): how long it ran, in real seconds
    ended_s: float | None = field(default=None)  # when its end was first seen
    overdue: bool = False
    ended_by: str | None = None


class ProcessRegistry:
    """Starts commands and remembers them until their end is collected; signals nothing else.

    Args:
        temp_dir: where command output is spooled (biomem's own temporary files).
        clock: for deadlines (the stuck decision).
    """

    def __init__(self, *, temp_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.temp_dir = temp_dir
        self._clock = clock
        # Held around every poll() and signal: the only reaper of a child is its
        # Popen, so a pid seen running under this lock is still ours to signal.
        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}

    def spawn(self, argv: Sequence[str], *, purpose: str, deadline_s: float) -> WorkerInfo:
        """Start ``argv`` (no shell) and record it; it counts as stuck after ``deadline_s``.

        Returns at once: the end is collected by :meth:`reap`.

        Raises:
            ValueError: ``argv`` is empty.
            OSError: the program cannot be started (not found, not executable).
        """
        args = [str(a) for a in argv]
        if not args or not args[0]:
            raise ValueError("a command needs at least a program")
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        output = self.temp_dir / f"{TEMP_PREFIX}{purpose}-{uuid.uuid4().hex[:12]}.out"
        handle = output.open("wb")
        try:
            popen = subprocess.Popen(  # noqa: S603 - an argv list from the configuration, no shell
                args,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                shell=False,
                # Its own session: a Ctrl-C meant for biomem does not reach it.
                start_new_session=True,
            )
        except OSError:
            handle.close()
            output.unlink(missing_ok=True)
            raise
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = 0.0  # ended already; poll() will tell
        now = self._clock.monotonic()
        info = WorkerInfo(popen.pid, purpose, args[0], now, now + deadline_s, create_time)
        with self._lock:
            self._entries[popen.pid] = _Entry(info, popen, output, handle, time.monotonic())
        log.info(
            "process_started",
            pid=popen.pid,
            purpose=purpose,
            program=args[0],
            deadline_s=deadline_s,
        )
        return info

    def _running(self, entry: _Entry) -> bool:
        """Poll ``entry`` (reaping it when it ended); note when its end was first seen."""
        with self._lock:
            if entry.popen.poll() is None:
                return True
            if entry.ended_s is None:
                entry.ended_s = time.monotonic()
                entry.overdue = entry.overdue or self._clock.monotonic() > entry.info.deadline
            return False

    def _snapshot(self) -> list[_Entry]:
        with self._lock:
            return list(self._entries.values())

    def workers(self, purpose: str | None = None) -> list[WorkerInfo]:
        """The processes started (of ``purpose``, or all) that are still running."""
        return [
            e.info
            for e in self._snapshot()
            if (purpose is None or e.info.purpose == purpose) and self._running(e)
        ]

    def stuck(self, now: float) -> list[WorkerInfo]:
        """The processes still running past their deadline at ``now`` (clock seconds)."""
        stuck = []
        for entry in self._snapshot():
            if now > entry.info.deadline and self._running(entry):
                entry.overdue = True
                stuck.append(entry.info)
        return stuck

    def wait(self, pid: int, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` (real seconds) for ``pid`` to end; True when it has."""
        with self._lock:
            entry = self._entries.get(pid)
        if entry is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            entry.popen.wait(timeout=max(0.0, timeout_s))
        return not self._running(entry)

    def reap(self) -> list[CommandResult]:
        """How the processes that ended since the last call ended; they are forgotten here."""
        results = []
        for entry in self._snapshot():
            if self._running(entry):
                continue
            with self._lock:
                if self._entries.pop(entry.info.pid, None) is None:
                    continue  # another caller collected it
            ended = entry.ended_s if entry.ended_s is not None else time.monotonic()
            results.append(
                CommandResult(
                    info=entry.info,
                    returncode=int(entry.popen.returncode),
                    overdue=entry.overdue,
                    ended_by=entry.ended_by,
                    seconds=round(ended - entry.started_s, 3),
                    output=self._finish(entry),
                )
            )
        return results

    @staticmethod
    def _finish(entry: _Entry) -> str:
        """The tail of an ended process's output; its spool file is deleted."""
        if entry.handle is not None:
            entry.handle.close()
            entry.handle = None
        try:
            data = entry.output.read_bytes()[-_OUTPUT_TAIL_CHARS * 4 :]
        except OSError:
            data = b""
        entry.output.unlink(missing_ok=True)
        return redact_text(data.decode("utf-8", "replace")[-_OUTPUT_TAIL_CHARS:])

    def _signal(self, entry: _Entry, sig: signal.Signals) -> bool:
        """Send ``sig`` if ``entry`` still runs as the process we started; True when sent."""
        with self._lock:
            if not self._running(entry) or not self._same_process(entry):
                return False
            entry.popen.send_signal(sig)
            entry.ended_by = sig.name
            return True

    def terminate(self, pids: Sequence[int], *, grace_s: float) -> TerminateReport:
        """SIGTERM the given processes biomem started, SIGKILL those alive after ``grace_s``.

        A pid this registry did not start, or whose start time no longer
        matches (the kernel reused it), is refused and never signalled.
        """
        terminated: list[int] = []
        killed: list[int] = []
        ended: list[int] = []
        refused: list[int] = []
        signalled: list[_Entry] = []
        for pid in pids:
            with self._lock:
                entry = self._entries.get(pid)
            if entry is None:
                refused.append(pid)
            elif not self._running(entry):  # reaped now: its pid is free, never signal it
                ended.append(pid)
            elif self._signal(entry, signal.SIGTERM):
                signalled.append(entry)
            else:
                refused.append(pid)
        deadline = time.monotonic() + grace_s
        for entry in signalled:
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            if not self._running(entry):
                terminated.append(entry.info.pid)
                continue
            if not self._signal(entry, signal.SIGKILL):  # it ended just now, after all
                terminated.append(entry.info.pid)
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.popen.wait(timeout=5.0)
            killed.append(entry.info.pid)
        if signalled:
            log.warning("processes_terminated", terminated=terminated, killed=killed)
        return TerminateReport(tuple(terminated), tuple(killed), tuple(ended), tuple(refused))

    @staticmethod
    def _same_process(entry: _Entry) -> bool:
        try:
            return abs(psutil.Process(entry.info.pid).create_time() - entry.info.create_time) < 0.5
        except psutil.Error:
            return False

    def close(self, *, grace_s: float = 5.0) -> None:
        """Terminate whatever still runs (the daemon is stopping); collect and forget it all."""
        running = [w.pid for w in self.workers()]
        if running:
            self.terminate(running, grace_s=grace_s)
        self.reap()
        with self._lock:
            left = list(self._entries.values())
            self._entries.clear()
        for entry in left:  # could not be ended even by SIGKILL: keep no file open for it
            self._finish(entry)
