"""Bulkheads bound the calls in flight and refuse, never hang, when full."""

from __future__ import annotations

import asyncio
import threading

import pytest

from biomem.resilience.bulkhead import Bulkhead, BulkheadFullError


def test_sync_slots_are_bounded_and_refused_without_wait() -> None:
    """With every slot taken, a caller that may not wait is refused at once."""
    bulkhead = Bulkhead("db", max_concurrent=2, max_wait_s=0)
    inside = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with bulkhead.slot():
            inside.wait()
            release.wait(5)

    workers = [threading.Thread(target=hold) for _ in range(2)]
    for worker in workers:
        worker.start()
    inside.wait(5)
    assert bulkhead.in_flight == 2
    with pytest.raises(BulkheadFullError), bulkhead.slot():
        pass
    release.set()
    for worker in workers:
        worker.join(5)
    assert bulkhead.in_flight == 0
    with bulkhead.slot():
        assert bulkhead.in_flight == 1


async def test_async_slots_limit_concurrency() -> None:
    """Tasks beyond the limit wait for a slot; never more than the limit run at once."""
    bulkhead = Bulkhead("ollama", max_concurrent=3, max_wait_s=None)
    peak = 0
    gate = asyncio.Event()

    async def call() -> None:
        nonlocal peak
        async with bulkhead.aslot():
            peak = max(peak, bulkhead.in_flight)
            await gate.wait()

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 3 and bulkhead.in_flight == 0


async def test_async_refusal_when_full_and_no_wait() -> None:
    """An async caller with max_wait_s=0 is refused while every slot is held."""
    bulkhead = Bulkhead("ollama", max_concurrent=1, max_wait_s=0)
    async with bulkhead.aslot():
        with pytest.raises(BulkheadFullError):
            async with bulkhead.aslot():
                pass
