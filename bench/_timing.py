"""Timing helpers for the micro-benchmarks: interleaved rounds, medians, load average.

A *case* is a named function that runs ``n`` calls of one implementation in a
tight loop and returns the elapsed nanoseconds. :func:`interleave` runs every
case once per round, rotating the order from round to round so that no
implementation always runs first (cold) or right after a given peer, and
returns each case's nanoseconds per call, round by round. Overheads are then
taken *within* a round (case minus the baseline measured in the same round),
so that slow drifts of the machine's speed cancel out.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

__all__ = [
    "AsyncCase",
    "Case",
    "Summary",
    "ainterleave",
    "atimed_call",
    "atimed_direct",
    "interleave",
    "loadavg",
    "overheads",
    "summarise",
    "timed_call",
    "timed_direct",
    "wait_for_quiet",
]


@dataclass(frozen=True, slots=True)
class Case:
    """One implementation: ``run(n)`` makes ``n`` calls and returns the elapsed ns."""

    name: str
    kind: str  # "baseline", "biomem" or "peer"
    run: Callable[[int], int]


@dataclass(frozen=True, slots=True)
class AsyncCase:
    """As :class:`Case`, for coroutines: ``await run(n)`` returns the elapsed ns."""

    name: str
    kind: str
    run: Callable[[int], Awaitable[int]]


# --------------------------------------------------------------------------- loops
# One loop per call shape, each in its own closure, so that every case pays the
# same loop cost (a ``for`` over ``repeat`` and one or two closure loads).


def timed_direct(fn: Callable[[], Any]) -> Callable[[int], int]:
    """A loop of ``fn()``."""

    def run(n: int) -> int:
        it = repeat(None, n)
        t0 = time.perf_counter_ns()
        for _ in it:
            fn()
        return time.perf_counter_ns() - t0

    return run


def timed_call(
    call: Callable[[Callable[[], Any]], Any], fn: Callable[[], Any]
) -> Callable[[int], int]:
    """A loop of ``call(fn)``, e.g. ``breaker.call(f)``."""

    def run(n: int) -> int:
        it = repeat(None, n)
        t0 = time.perf_counter_ns()
        for _ in it:
            call(fn)
        return time.perf_counter_ns() - t0

    return run


def atimed_direct(fn: Callable[[], Awaitable[Any]]) -> Callable[[int], Awaitable[int]]:
    """A loop of ``await fn()``."""

    async def run(n: int) -> int:
        it = repeat(None, n)
        t0 = time.perf_counter_ns()
        for _ in it:
            await fn()
        return time.perf_counter_ns() - t0

    return run


def atimed_call(
    call: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
    fn: Callable[[], Awaitable[Any]],
) -> Callable[[int], Awaitable[int]]:
    """A loop of ``await call(fn)``, e.g. ``await breaker.acall(f)``."""

    async def run(n: int) -> int:
        it = repeat(None, n)
        t0 = time.perf_counter_ns()
        for _ in it:
            await call(fn)
        return time.perf_counter_ns() - t0

    return run


# --------------------------------------------------------------------------- rounds


def _order(count: int, round_no: int) -> list[int]:
    shift = round_no % count
    return [*range(shift, count), *range(shift)]


def interleave(
    cases: Sequence[Case], *, rounds: int, calls: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run ``rounds`` rounds of ``calls`` calls per case; ns/call per case, per round."""
    per_call: dict[str, list[float]] = {case.name: [] for case in cases}
    for round_no in range(warmup + rounds):
        for i in _order(len(cases), round_no):
            case = cases[i]
            elapsed = case.run(calls)
            if round_no >= warmup:
                per_call[case.name].append(elapsed / calls)
    return per_call


async def ainterleave(
    cases: Sequence[AsyncCase], *, rounds: int, calls: int, warmup: int = 1
) -> dict[str, list[float]]:
    """As :func:`interleave`, inside the running event loop."""
    per_call: dict[str, list[float]] = {case.name: [] for case in cases}
    for round_no in range(warmup + rounds):
        for i in _order(len(cases), round_no):
            case = cases[i]
            elapsed = await case.run(calls)
            if round_no >= warmup:
                per_call[case.name].append(elapsed / calls)
        await asyncio.sleep(0)
    return per_call


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Summary:
    """Median ns/call, and the median and quartiles of the overhead over the baseline."""

    name: str
    kind: str
    ns_per_call: float
    overhead: float
    q1: float
    q3: float


def overheads(per_call: dict[str, list[float]], baseline: str) -> dict[str, list[float]]:
    """Each case's ns/call minus the baseline's of the same round."""
    base = per_call[baseline]
    return {
        name: [v - b for v, b in zip(values, base, strict=True)]
        for name, values in per_call.items()
    }


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarise(
    kinds: Sequence[tuple[str, str]], per_call: dict[str, list[float]], baseline: str
) -> list[Summary]:
    """One :class:`Summary` per ``(name, kind)``, in the order given."""
    extra = overheads(per_call, baseline)
    rows = []
    for name, kind in kinds:
        q1, q3 = _quartiles(extra[name])
        rows.append(
            Summary(
                name=name,
                kind=kind,
                ns_per_call=statistics.median(per_call[name]),
                overhead=statistics.median(extra[name]),
                q1=q1,
                q3=q3,
            )
        )
    return rows


# --------------------------------------------------------------------------- machine load


def loadavg() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (Linux ``/proc/loadavg``)."""
    fields = Path("/proc/loadavg").read_text().split()
    return float(fields[0]), float(fields[1]), float(fields[2])


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 30.0) -> tuple[bool, float]:
    """Wait until the 1-minute load is at most ``max_load``; return (quiet, waited seconds)."""
    start = time.monotonic()
    while True:
        one = loadavg()[0]
        waited = time.monotonic() - start
        if one <= max_load:
            return True, waited
        if waited + poll_s > timeout_s:
            return False, waited
        print(f"load {one:.2f} > {max_load}: waiting {poll_s:.0f} s (waited {waited:.0f} s)")
        time.sleep(poll_s)
