"""Checks run on request, for a monitor without its background loop (private).

With HEALTH_CONTINUOUS_MONITORING=false nothing runs the checks unless a
request asks for them. :class:`OnDemandRuns` keeps that cheap and safe:

* a result younger than the interval is reused, so the checks run at most
  once per interval whatever the request rate;
* a stale result starts one run that every request arriving meanwhile waits
  for (a single flight: a burst of probes costs one pass, never a stampede);
* the run has a thread of its own, tied to no request: a client that goes
  away (its task cancelled) leaves the run and the other waiters alone, and
  sync callers (threads) and async ones (event loops) share the same run;
* a caller waits at most ``wait_s`` (the slowest check's timeout and a margin:
  the monitor's own timeouts end the run first), then goes on with the last
  result.

Import :class:`~biomem.health.monitor.HealthMonitor`, which uses this when
built with ``on_demand=True``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["OnDemandRuns"]

logger = logging.getLogger("biomem.health.monitor")


class OnDemandRuns:
    """At most one run per interval, shared by every caller that finds the result stale.

    Args:
        run: runs the checks and stores the result (blocking; called on the run's thread).
        interval_s: how long a result is reused, from the end of its run.
        wait_s: how long a caller waits for a run before going on without it.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        run: Callable[[], object],
        *,
        interval_s: float,
        wait_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._run = run
        self.interval_s = interval_s
        self.wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._flight: Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._fresh_until: float | None = None  # None: no run has finished yet
        self.runs = 0  # runs started
        self.waiting = 0  # callers waiting for the run in flight

    def remaining_s(self) -> float:
        """Seconds the last result is still reused for; 0 when stale or never taken."""
        with self._lock:
            until = self._fresh_until
        return 0.0 if until is None else max(0.0, until - self._clock())

    def _join(self) -> Future[None] | None:
        """The run to wait for: the one in flight, a new one if stale, None while fresh."""
        with self._lock:
            if self._flight is not None:
                return self._flight
            if self._fresh_until is not None and self._clock() < self._fresh_until:
                return None
            flight: Future[None] = Future()
            # RUNNING at once: a waiter's cancellation can then never cancel the shared run.
            flight.set_running_or_notify_cancel()
            self._flight = flight
            self.runs += 1
            thread = threading.Thread(
                target=self._execute, args=(flight,), name="health-on-demand", daemon=True
            )
            self._thread = thread
        thread.start()
        return flight

    def _execute(self, flight: Future[None]) -> None:
        try:
            self._run()
        except Exception:  # a failed pass keeps the last result; the next stale request retries
            logger.exception("on-demand health checks failed")
        finally:
            with self._lock:
                # Fresh even after a failure: a broken pass must not turn into one per request.
                self._fresh_until = self._clock() + self.interval_s
                self._flight = None
            flight.set_result(None)

    def _waiting(self, delta: int) -> None:
        with self._lock:
            self.waiting += delta

    def wait(self) -> None:
        """Block until the result is fresh, or ``wait_s`` has passed."""
        flight = self._join()
        if flight is None:
            return
        self._waiting(1)
        try:
            flight.result(timeout=self.wait_s)
        except TimeoutError:
            logger.warning("on-demand health checks still running after %.1f s", self.wait_s)
        finally:
            self._waiting(-1)

    async def wait_async(self) -> None:
        """:meth:`wait` for a coroutine: the event loop is never blocked."""
        flight = self._join()
        if flight is None:
            return
        self._waiting(1)
        try:
            # shield: a timeout or a cancelled request stops this wait, never the run.
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(flight)), self.wait_s)
        except TimeoutError:
            logger.warning("on-demand health checks still running after %.1f s", self.wait_s)
        finally:
            self._waiting(-1)

    def close(self, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` for a run in flight to end."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
