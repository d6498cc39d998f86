"""Overhead of biomem's circuit breaker and retrier against peer libraries, in one run.

Three parts, printed as Markdown tables:

1. Per-call overhead of a CLOSED breaker around a trivial function, sync and
   async: biomem (``call``/``acall`` and the decorator) against pybreaker,
   circuitbreaker, purgatory and aiobreaker. Overhead = ns/call through the
   breaker minus ns/call of calling the function directly, both measured in
   the same round; rounds are interleaved (every implementation once per
   round, the order rotated each round) and the median over rounds is reported.
2. The retry wrapper's success path: biomem's ``Retrier`` (``call`` and the
   decorator, with and without a ``RetryBudget``) against tenacity and backoff.
3. Concurrency: T threads × N calls of a function that sleeps (a stand-in for
   I/O: ``time.sleep`` releases the GIL) through one shared breaker, wall time
   against the same calls without a breaker.

Run: ``.venv/bin/python bench/resilience_overhead.py`` (``--help`` for knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import aiobreaker
import backoff
import circuitbreaker
import purgatory
import pybreaker
import tenacity
from _timing import (
    AsyncCase,
    Case,
    Summary,
    ainterleave,
    atimed_call,
    atimed_direct,
    interleave,
    loadavg,
    summarise,
    timed_call,
    timed_direct,
    wait_for_quiet,
)

from biomem.resilience.breaker import BreakerConfig, CircuitBreaker
from biomem.resilience.budget import RetryBudget
from biomem.resilience.retry import Retrier, RetryConfig

PEERS = ("pybreaker", "circuitbreaker", "purgatory", "aiobreaker", "tenacity", "backoff")

BASELINE = "direct call (baseline)"
ABASELINE = "`await f()` (baseline)"


def f() -> int:
    """The protected function: as cheap as a call gets."""
    return 1


async def af() -> int:
    """The protected coroutine: returns without suspending."""
    return 1


def _biomem_breaker(name: str) -> CircuitBreaker:
    # The defaults spelled out: a count window of 100 calls, judged from 20.
    return CircuitBreaker(
        name, BreakerConfig(window_type="count", window_size=100, minimum_calls=20)
    )


# --------------------------------------------------------------------------- part 1: breakers


def sync_breaker_cases() -> list[Case]:
    """The sync CLOSED-breaker cases; each implementation gets its own breaker."""
    bio_call = _biomem_breaker("bench-call")
    bio_dec = _biomem_breaker("bench-decorator")(f)
    pb_call = pybreaker.CircuitBreaker()
    pb_dec = pybreaker.CircuitBreaker()(f)
    cb_dec = circuitbreaker.CircuitBreaker(name="bench-sync")(f)
    pg = purgatory.SyncCircuitBreakerFactory()
    pg_dec = pg("bench-decorator")(f)

    def pg_cm() -> int:
        with pg.get_breaker("bench-cm"):
            return f()

    return [
        Case(BASELINE, "baseline", timed_direct(f)),
        Case("biomem `breaker.call(f)`", "biomem", timed_call(bio_call.call, f)),
        Case("biomem `@breaker`", "biomem", timed_direct(bio_dec)),
        Case("pybreaker `CircuitBreaker().call(f)`", "peer", timed_call(pb_call.call, f)),
        Case("pybreaker `@CircuitBreaker()`", "peer", timed_direct(pb_dec)),
        Case("circuitbreaker `@CircuitBreaker()`", "peer", timed_direct(cb_dec)),
        Case("purgatory (sync) `@factory(name)`", "peer", timed_direct(pg_dec)),
        # The documented form: the breaker is looked up on every use.
        Case("purgatory (sync) `with factory.get_breaker(name)`", "peer", timed_direct(pg_cm)),
    ]


async def async_breaker_cases() -> list[AsyncCase]:
    """The async CLOSED-breaker cases (built inside the event loop)."""
    bio_call = _biomem_breaker("bench-acall")
    bio_dec = _biomem_breaker("bench-adecorator")(af)
    pg = purgatory.AsyncCircuitBreakerFactory()
    await pg.initialize()
    pg_dec = pg("bench-decorator")(af)
    pg_held = await pg.get_breaker("bench-held")
    aio_call = aiobreaker.CircuitBreaker()
    aio_dec = aiobreaker.CircuitBreaker()(af)
    cb_dec = circuitbreaker.CircuitBreaker(name="bench-async")(af)

    async def pg_cm() -> int:
        async with await pg.get_breaker("bench-cm"):
            return await af()

    async def pg_cm_held() -> int:
        async with pg_held:
            return await af()

    return [
        AsyncCase(ABASELINE, "baseline", atimed_direct(af)),
        AsyncCase("biomem `await breaker.acall(f)`", "biomem", atimed_call(bio_call.acall, af)),
        AsyncCase("biomem `@breaker` (async def)", "biomem", atimed_direct(bio_dec)),
        AsyncCase("purgatory `@factory(name)`", "peer", atimed_direct(pg_dec)),
        AsyncCase(
            "purgatory `async with await factory.get_breaker(name)`", "peer", atimed_direct(pg_cm)
        ),
        AsyncCase(
            "purgatory `async with breaker` (looked up once)", "peer", atimed_direct(pg_cm_held)
        ),
        AsyncCase(
            "aiobreaker `await CircuitBreaker().call_async(f)`",
            "peer",
            atimed_call(aio_call.call_async, af),
        ),
        AsyncCase("aiobreaker `@CircuitBreaker()`", "peer", atimed_direct(aio_dec)),
        AsyncCase("circuitbreaker `@CircuitBreaker()` (async def)", "peer", atimed_direct(cb_dec)),
    ]


# --------------------------------------------------------------------------- part 2: retry


def retry_cases() -> list[Case]:
    """The success path of each retry wrapper (the function never fails)."""
    config = RetryConfig()
    plain = Retrier(config, name="bench")
    budgeted = Retrier(config, name="bench-budget", budget=RetryBudget())
    dec = Retrier(config, name="bench-dec")(f)
    dec_budget = Retrier(config, name="bench-dec-budget", budget=RetryBudget())(f)
    ten_dec = tenacity.retry(stop=tenacity.stop_after_attempt(4))(f)
    ten_retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(4))
    bo_dec = backoff.on_exception(backoff.expo, Exception, max_tries=4)(f)
    return [
        Case(BASELINE, "baseline", timed_direct(f)),
        Case("biomem `Retrier.call(f)`", "biomem", timed_call(plain.call, f)),
        Case("biomem `Retrier.call(f)` + RetryBudget", "biomem", timed_call(budgeted.call, f)),
        Case("biomem `@Retrier`", "biomem", timed_direct(dec)),
        Case("biomem `@Retrier` + RetryBudget", "biomem", timed_direct(dec_budget)),
        Case("tenacity `@retry(stop=stop_after_attempt(4))`", "peer", timed_direct(ten_dec)),
        Case(
            "tenacity `Retrying(stop=stop_after_attempt(4))(f)`",
            "peer",
            timed_call(ten_retrying, f),
        ),
        Case(
            "backoff `@on_exception(expo, Exception, max_tries=4)`", "backoff", timed_direct(bo_dec)
        ),
    ]


# --------------------------------------------------------------------------- part 3: threads


def _wall(call: Callable[[], Any], threads: int, calls: int) -> float:
    """Seconds for ``threads`` threads to make ``calls`` calls each, started together."""
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(calls):
            call()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def concurrency(
    threads: int, calls: int, io_s: float, repeats: int
) -> list[tuple[str, str, float]]:
    """(name, kind, median wall seconds) per implementation, repeats interleaved."""

    def io() -> int:
        time.sleep(io_s)
        return 1

    bio = _biomem_breaker("bench-threads")
    bio_dec = _biomem_breaker("bench-threads-dec")(io)
    pb = pybreaker.CircuitBreaker()
    cb_dec = circuitbreaker.CircuitBreaker(name="bench-threads")(io)
    cases: list[tuple[str, str, Callable[[], Any]]] = [
        ("no breaker", "baseline", io),
        ("biomem `breaker.call(io)`", "biomem", lambda: bio.call(io)),
        ("biomem `@breaker`", "biomem", bio_dec),
        ("pybreaker `CircuitBreaker().call(io)`", "peer", lambda: pb.call(io)),
        ("circuitbreaker `@CircuitBreaker()`", "peer", cb_dec),
    ]
    walls: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for r in range(repeats):
        shift = r % len(cases)
        for name, _, call in cases[shift:] + cases[:shift]:
            walls[name].append(_wall(call, threads, calls))
    return [(name, kind, statistics.median(walls[name])) for name, kind, _ in cases]


# --------------------------------------------------------------------------- reporting


def _load() -> str:
    one, five, fifteen = loadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _breaker_table(rows: Sequence[Summary], title: str) -> str:
    bio = [r for r in rows if r.kind == "biomem"]
    peers = [r for r in rows if r.kind == "peer"]
    worst_bio = max(bio, key=lambda r: r.overhead)
    fastest_peer = min(peers, key=lambda r: r.overhead)
    lines = [
        f"**{title}** (ratio = overhead / overhead of {worst_bio.name}, biomem's slower form)",
        "",
        "| implementation | ns/call | overhead ns/call (median) | overhead IQR | ratio to biomem |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "—" if r.kind == "baseline" else f"{r.overhead / worst_bio.overhead:.2f}"
        iqr = "—" if r.kind == "baseline" else f"{r.q1:.0f}–{r.q3:.0f}"
        overhead = "0" if r.kind == "baseline" else f"{r.overhead:.0f}"
        lines.append(f"| {r.name} | {r.ns_per_call:.0f} | {overhead} | {iqr} | {ratio} |")
    ratio = worst_bio.overhead / fastest_peer.overhead
    verdict = "met" if ratio < 1.0 else "MISSED"
    lines += [
        "",
        f"Target biomem / fastest peer < 1.0: {worst_bio.name} {worst_bio.overhead:.0f} ns"
        f" / {fastest_peer.name} {fastest_peer.overhead:.0f} ns = **{ratio:.2f}** ({verdict}).",
    ]
    return "\n".join(lines)


def _retry_table(rows: Sequence[Summary]) -> str:
    ref = next(r for r in rows if r.kind == "backoff")
    lines = [
        "**Retry wrapper, success path** (ratio = overhead / backoff's overhead)",
        "",
        "| implementation | ns/call | overhead ns/call (median) | overhead IQR"
        " | ratio to backoff |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "—" if r.kind == "baseline" else f"{r.overhead / ref.overhead:.3f}"
        iqr = "—" if r.kind == "baseline" else f"{r.q1:.0f}–{r.q3:.0f}"
        overhead = "0" if r.kind == "baseline" else f"{r.overhead:.0f}"
        lines.append(f"| {r.name} | {r.ns_per_call:.0f} | {overhead} | {iqr} | {ratio} |")
    worst = max((r for r in rows if r.kind == "biomem"), key=lambda r: r.overhead)
    ratio = worst.overhead / ref.overhead
    verdict = "met" if ratio <= 1 / 3 else "MISSED"
    lines += [
        "",
        f"Target ≤ 1/3 of backoff's: slowest biomem form ({worst.name}) {worst.overhead:.0f} ns"
        f" / {ref.overhead:.0f} ns = **{ratio:.3f}** ({verdict}).",
    ]
    return "\n".join(lines)


def _concurrency_table(
    rows: Sequence[tuple[str, str, float]], threads: int, calls: int, io_s: float, repeats: int
) -> str:
    base = next(wall for _, kind, wall in rows if kind == "baseline")
    ideal = calls * io_s
    lines = [
        f"**Concurrency**: {threads} threads × {calls} calls of `time.sleep({io_s})` through one"
        f" shared breaker; median wall time of {repeats} interleaved repeats"
        f" (ideal {ideal:.2f} s, fully serialised {threads * calls * io_s:.2f} s)",
        "",
        "| implementation | wall s | ratio to no breaker |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {wall:.3f} | {wall / base:.2f} |" for name, _, wall in rows]
    worst = max((r for r in rows if r[1] == "biomem"), key=lambda r: r[2])
    ratio = worst[2] / base
    verdict = "met" if ratio <= 1.1 else "MISSED"
    lines += ["", f"Target biomem within 1.1× of no breaker: **{ratio:.2f}×** ({verdict})."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per case per round")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--thread-calls", type=int, default=25, help="calls per thread")
    parser.add_argument("--io-ms", type=float, default=20.0, help="sleep per call, ms")
    parser.add_argument("--repeats", type=int, default=3, help="concurrency repeats")
    parser.add_argument(
        "--parts", default="breaker,async,retry,threads", help="comma-separated subset to run"
    )
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-min load ≤ this")
    parser.add_argument("--load-wait-s", type=float, default=600.0, help="give up waiting after")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))

    quiet, waited = wait_for_quiet(args.max_load, args.load_wait_s)
    if not quiet:
        print(f"warning: load still above {args.max_load} after {waited:.0f} s; measuring anyway")

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PEERS)
    print(f"Python {platform.python_version()} ({sys.executable}), {platform.machine()}")
    print(f"biomem {metadata.version('biomem')}; peers: {versions}")
    print(
        f"rounds {args.rounds} × {args.calls} calls per case; load (1/5/15 min) at start: {_load()}"
    )
    print()
    gc.collect()
    started = time.perf_counter()

    if "breaker" in parts:
        cases = sync_breaker_cases()
        per_call = interleave(cases, rounds=args.rounds, calls=args.calls)
        rows = summarise([(c.name, c.kind) for c in cases], per_call, BASELINE)
        print(_breaker_table(rows, "CLOSED breaker, sync"))
        print(f"\n(load after: {_load()})\n")

    if "async" in parts:

        async def run_async() -> list[Summary]:
            acases = await async_breaker_cases()
            per_call = await ainterleave(acases, rounds=args.rounds, calls=args.calls)
            return summarise([(c.name, c.kind) for c in acases], per_call, ABASELINE)

        print(_breaker_table(asyncio.run(run_async()), "CLOSED breaker, async"))
        print(f"\n(load after: {_load()})\n")

    if "retry" in parts:
        rcases = retry_cases()
        per_call = interleave(rcases, rounds=args.rounds, calls=args.calls)
        print(_retry_table(summarise([(c.name, c.kind) for c in rcases], per_call, BASELINE)))
        print(f"\n(load after: {_load()})\n")

    if "threads" in parts:
        io_s = args.io_ms / 1000
        walls = concurrency(args.threads, args.thread_calls, io_s, args.repeats)
        print(_concurrency_table(walls, args.threads, args.thread_calls, io_s, args.repeats))
        print(f"\n(load after: {_load()})\n")

    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
