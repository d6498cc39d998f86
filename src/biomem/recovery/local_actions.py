"""Actions on the process's own resources, and the two that reach outside through a command.

* ``clear_llm_cache`` — the LLM response cache emptied; reports what it held.
* ``remove_temp_files`` — DuckDB's spill directory (``temp_directory``, only
  when it lies under the data directory) and biomem's own temporary files
  (``<data dir>/tmp/biomem-*``); a file this process has open is never
  touched, nothing outside those two places ever is. Reports bytes freed.
* ``rotate_logs`` — the BIOMEM_LOG_FILE rotated, ``log_keep`` old files kept.
* ``collect_garbage`` — ``gc.collect()`` and, on glibc, ``malloc_trim(0)``
  (free heap pages go back to the system); reports the resident memory freed.
* ``restart_ollama`` — the configured argv started without a shell through
  the process registry, with ``command_timeout_seconds`` as its deadline; the
  engine goes on at once and records the command's end when it sees it. Past
  its deadline the command is a stuck worker. Unavailable when none is
  configured, or while the previous restart still runs.
* ``terminate_stuck_workers`` — processes biomem started that run past their
  deadline: SIGTERM, a grace period, SIGKILL; never any other process.
* ``escalate`` — a critical alert through the escalator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
from pathlib import Path

import psutil

from biomem.recovery.actions import (
    Action,
    ActionContext,
    ActionPlan,
    ActionResult,
    ActionUnavailable,
)
from biomem.recovery.processes import TEMP_PREFIX, own_temp_dir
from biomem.resilience.errors import BiomemError

__all__ = ["LOCAL_ACTIONS", "temp_candidates"]

_LISTED_FILES = 50  # files named in a plan; the counts cover all


def _open_files() -> set[Path]:
    try:
        return {Path(f.path).resolve() for f in psutil.Process().open_files()}
    except (psutil.Error, OSError):
        return set()


def temp_candidates(ctx: ActionContext) -> tuple[list[Path], list[Path]]:
    """(directories searched, files that may go): ours, not open, under the data directory."""
    store = ctx.app.store
    data_dir = store.path.parent.resolve()
    directories: list[Path] = []
    try:
        spill = store.temp_directory()
    except BiomemError:  # a failing store still has DuckDB's default spill directory
        spill = store.path.with_name(store.path.name + ".tmp")
    if spill is not None:
        spill = spill.resolve()
        if spill.is_relative_to(data_dir) and spill != data_dir:
            directories.append(spill)
    directories.append(own_temp_dir(data_dir))
    in_use = _open_files()
    files: list[Path] = []
    for index, directory in enumerate(directories):
        if not directory.is_dir():
            continue
        own = index == len(directories) - 1
        for path in sorted(directory.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.resolve() in in_use:
                continue
            if own and not path.name.startswith(TEMP_PREFIX):
                continue
            files.append(path)
    return directories, files


class ClearLLMCache:
    name = "clear_llm_cache"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        stats = ctx.app.llm_cache.stats()
        return ActionPlan(
            self.name, "LLM response cache", {"entries": stats.entries, "bytes": stats.bytes}
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        held = ctx.app.llm_cache.clear()
        return ActionResult(
            True,
            f"cleared {held.entries} cached answer(s), about {held.bytes} bytes",
            {"entries": held.entries, "bytes": held.bytes},
        )


class RemoveTempFiles:
    name = "remove_temp_files"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        directories, files = temp_candidates(ctx)
        total = sum(_size(f) for f in files)
        return ActionPlan(
            self.name,
            ", ".join(str(d) for d in directories),
            {
                "files": [str(f) for f in files[:_LISTED_FILES]],
                "file_count": len(files),
                "bytes": total,
            },
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        # Chosen again now: a file opened since the plan was made is kept.
        _, files = temp_candidates(ctx)
        removed, freed, errors = 0, 0, []
        for path in files:
            size = _size(path)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            removed += 1
            freed += size
        summary = f"removed {removed} file(s), {freed} bytes freed"
        if errors:
            summary += f"; {len(errors)} could not be removed"
        return ActionResult(
            not errors, summary, {"removed": removed, "bytes_freed": freed, "errors": errors[:10]}
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class RotateLogs:
    name = "rotate_logs"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        if ctx.log_file is None:
            raise ActionUnavailable("no log file configured (BIOMEM_LOG_FILE unset)")
        return ActionPlan(self.name, str(ctx.log_file.path), {"keep": ctx.settings.log_keep})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        if ctx.log_file is None:  # pragma: no cover - plan() said so
            raise ActionUnavailable("no log file configured")
        report = ctx.log_file.rotate(keep=int(plan.arguments["keep"]))
        return ActionResult(
            True,
            f"rotated {report.rotated_bytes} bytes to {report.rotated_to}; removed "
            f"{len(report.removed)} old file(s), {report.freed_bytes} bytes freed",
            {
                "rotated_to": report.rotated_to,
                "rotated_bytes": report.rotated_bytes,
                "removed": list(report.removed),
                "bytes_freed": report.freed_bytes,
            },
        )


def _malloc_trim() -> bool | None:
    """``malloc_trim(0)`` on glibc: True when memory went back to the system, None if no glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name)
    return bool(libc.malloc_trim(0))


class CollectGarbage:
    name = "collect_garbage"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        trim = platform.libc_ver()[0] == "glibc"
        return ActionPlan(self.name, f"this process (pid {os.getpid()})", {"malloc_trim": trim})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        process = psutil.Process()
        before = process.memory_info().rss
        collected = gc.collect()
        released = _malloc_trim() if plan.arguments.get("malloc_trim") else None
        after = process.memory_info().rss
        freed = before - after
        return ActionResult(
            True,
            f"collected {collected} object(s); resident memory {before} → {after} bytes"
            f" ({freed} freed)",
            {
                "objects": collected,
                "rss_before": before,
                "rss_after": after,
                "rss_freed": freed,
                "malloc_trim_released": released,
            },
        )


class RestartOllama:
    name = "restart_ollama"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        argv = list(ctx.settings.ollama_restart_command)
        if not argv:
            raise ActionUnavailable(
                "no restart command configured ([recovery] ollama_restart_command)"
            )
        # One restart at a time: a second one would fight the first.
        running = ctx.processes.workers(self.name)
        if running:
            raise ActionUnavailable(f"the last restart command (pid {running[0].pid}) still runs")
        return ActionPlan(
            self.name,
            "ollama",
            {"argv": argv, "deadline_s": ctx.settings.command_timeout_seconds},
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        deadline_s = float(plan.arguments["deadline_s"])
        # Started, not waited for: the engine (and every other rule) goes on while
        # it runs; past its deadline the workers_stuck rule ends it.
        worker = ctx.processes.spawn(
            list(plan.arguments["argv"]), purpose=self.name, deadline_s=deadline_s
        )
        return ActionResult(
            True,
            f"command started (pid {worker.pid}); stuck if still running after {deadline_s:g} s",
            {"pid": worker.pid, "deadline_s": deadline_s},
            command=worker.pid,
        )


class TerminateStuckWorkers:
    name = "terminate_stuck_workers"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        stuck = ctx.processes.stuck(ctx.clock.monotonic())
        return ActionPlan(
            self.name,
            "processes started by biomem past their deadline",
            {
                "pids": [w.pid for w in stuck],
                "purposes": [w.purpose for w in stuck],
                "grace_s": ctx.settings.worker_grace_seconds,
            },
        )

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        pids = [int(p) for p in plan.arguments["pids"]]
        if not pids:
            return ActionResult(True, "no stuck worker: nothing to do", {"pids": []})
        report = ctx.processes.terminate(pids, grace_s=float(plan.arguments["grace_s"]))
        detail = {
            "terminated": list(report.terminated),
            "killed": list(report.killed),
            "already_ended": list(report.already_ended),
            "refused": list(report.refused),
        }
        return ActionResult(
            not report.refused,
            f"terminated {list(report.terminated)}, killed {list(report.killed)}",
            detail,
        )


class Escalate:
    name = "escalate"

    def plan(self, ctx: ActionContext) -> ActionPlan:
        rule = ctx.rule
        summary = (
            f"recovery rule {rule.name} used its {rule.max_attempts} attempt(s) in "
            f"{rule.window_seconds:g} s and {rule.component} is still failing: "
            f"{ctx.trigger.detail}"
        )
        return ActionPlan(self.name, rule.component, {"severity": "critical", "summary": summary})

    def run(self, plan: ActionPlan, ctx: ActionContext) -> ActionResult:
        summary = str(plan.arguments["summary"])
        ctx.escalator.escalate(rule=ctx.rule.name, component=ctx.rule.component, summary=summary)
        return ActionResult(True, f"critical alert raised: {summary}", {})


LOCAL_ACTIONS: tuple[Action, ...] = (
    ClearLLMCache(),
    RemoveTempFiles(),
    RotateLogs(),
    CollectGarbage(),
    RestartOllama(),
    TerminateStuckWorkers(),
    Escalate(),
)
