"""The processes biomem itself starts, and the only ones recovery may ever signal.

Every command recovery runs (the configured Ollama restart command, any
worker) is started here: an argv list, never a shell, its output spooled to
a file of biomem's own temporary directory, its pid recorded together with
the process's start time (psutil ``create_time``). Terminating checks both,
and goes through the ``Popen`` object that has not reaped the child yet, so
a pid the kernel has meanwhile given to another process is never signalled:
anything not in this registry is refused. Termination is SIGTERM, a grace
period, then SIGKILL.

A worker is *stuck* when it still runs past the deadline given when it was
started; the decision takes ``now`` (clock seconds) and so is tested on a
fake clock.
"""

from __future__ import annotations

import contextlib
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
    """How one command run ended."""

    pid: int
    returncode: int | None  # None when it had to be terminated
    timed_out: bool
    seconds: float
    output: str  # the tail of its standard output and error, redacted
    terminated: TerminateReport | None = None


@dataclass(slots=True)
class _Entry:
    info: WorkerInfo
    popen: subprocess.Popen[bytes]
    output: Path
    handle: IO[bytes] | None = field(default=None)
    detached: bool = True  # spawn(): reaped by workers(); run(): by run() itself


class ProcessRegistry:
    """Starts commands and remembers them; signals nothing else.

    Args:
        temp_dir: where command output is spooled (biomem's own temporary files).
        clock: for deadlines (the stuck decision).
    """

    def __init__(self, *, temp_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.temp_dir = temp_dir
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}

    def spawn(self, argv: Sequence[str], *, purpose: str, deadline_s: float) -> WorkerInfo:
        """Start ``argv`` (no shell) and record it; it counts as stuck after ``deadline_s``.

        Raises:
            ValueError: ``argv`` is empty.
            OSError: the program cannot be started (not found, not executable).
        """
        return self._spawn(argv, purpose=purpose, deadline_s=deadline_s, detached=True)

    def _spawn(
        self, argv: Sequence[str], *, purpose: str, deadline_s: float, detached: bool
    ) -> WorkerInfo:
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
            self._entries[popen.pid] = _Entry(info, popen, output, handle, detached)
        log.info("process_started", pid=popen.pid, purpose=purpose, program=args[0])
        return info

    def run(
        self, argv: Sequence[str], *, purpose: str, timeout_s: float, grace_s: float = 5.0
    ) -> CommandResult:
        """Run ``argv`` to its end, at most ``timeout_s``; terminated past it.

        Raises:
            ValueError, OSError: as :meth:`spawn`.
        """
        started = time.monotonic()
        info = self._spawn(argv, purpose=purpose, deadline_s=timeout_s, detached=False)
        entry = self._entries[info.pid]
        report: TerminateReport | None = None
        timed_out = False
        try:
            entry.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            report = self.terminate([info.pid], grace_s=grace_s)
        output = self._finish(info.pid)
        return CommandResult(
            pid=info.pid,
            returncode=None if timed_out else entry.popen.returncode,
            timed_out=timed_out,
            seconds=round(time.monotonic() - started, 3),
            output=output,
            terminated=report,
        )

    def _finish(self, pid: int) -> str:
        """Forget an ended process; return the tail of its output and delete the spool file."""
        with self._lock:
            entry = self._entries.pop(pid, None)
        if entry is None:
            return ""
        if entry.handle is not None:
            entry.handle.close()
        try:
            data = entry.output.read_bytes()[-_OUTPUT_TAIL_CHARS * 4 :]
        except OSError:
            data = b""
        entry.output.unlink(missing_ok=True)
        return redact_text(data.decode("utf-8", "replace")[-_OUTPUT_TAIL_CHARS:])

    def workers(self) -> list[WorkerInfo]:
        """The processes started and not yet known to have ended (ended ones are reaped)."""
        with self._lock:
            entries = list(self._entries.values())
        running = []
        for entry in entries:
            if entry.popen.poll() is None:
                running.append(entry.info)
            elif entry.detached:  # run() reaps its own
                self._finish(entry.info.pid)
        return running

    def stuck(self, now: float) -> list[WorkerInfo]:
        """The processes still running past their deadline at ``now`` (clock seconds)."""
        return [w for w in self.workers() if now > w.deadline]

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
                continue
            if entry.popen.poll() is not None:  # reaped now: its pid is free, never signal it
                ended.append(pid)
                continue
            if not self._same_process(entry):
                refused.append(pid)
                continue
            entry.popen.terminate()
            signalled.append(entry)
        deadline = time.monotonic() + grace_s
        for entry in signalled:
            try:
                entry.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                terminated.append(entry.info.pid)
            except subprocess.TimeoutExpired:
                entry.popen.kill()
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
        """Terminate whatever is still running (the daemon is stopping) and clean up."""
        running = [w.pid for w in self.workers()]
        if running:
            self.terminate(running, grace_s=grace_s)
        with self._lock:
            pids = list(self._entries)
        for pid in pids:
            self._finish(pid)
