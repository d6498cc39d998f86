"""A durable dead-letter queue: failed operations kept, replayed with backoff, given up loudly.

A caller that cannot complete an operation (a write to PostgreSQL while it
is down) hands it to :meth:`DeadLetterQueue.put` with a payload sufficient to
run it again, under the name of a handler in a :class:`ReplayRegistry`.
:meth:`DeadLetterQueue.replay_due` later claims the letters whose time has
come and runs the real handler; nothing is marked recovered without running.

Life of a letter::

    put ─► PENDING ─claim─► REPLAYING ─ok─► RECOVERED
             ▲  ▲              │ │
             │  └─ unhealthy ──┘ └─ failed ─┬─ attempts < max ─► PENDING (backoff)
             │     (no attempt spent)       └─ attempts ≥ max ─► DEAD ─ replay(ids) ─► REPLAYING
             └─ requeue_stale() for letters a crashed worker left REPLAYING

Delivery is at least once: a crash after a handler ran but before its
outcome was stored runs it again, so handlers must be idempotent (the
idempotency key is in the letter). Each transition is one committed
transaction in the store; each replay outcome is an event
(:class:`DeadLetterRecovered`, :class:`DeadLetterFailed`,
:class:`DeadLetterDead`) given to listeners.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import inspect
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from biomem.resilience._dlq_duckdb import DuckDBDeadLetterStore, DuckDBTransactions
from biomem.resilience._dlq_postgres import PostgresDeadLetterStore
from biomem.resilience._dlq_replay import (
    _REPLAYABLE,
    DeadLetterDead,
    DeadLetterEvent,
    DeadLetterFailed,
    DeadLetterListener,
    DeadLetterRecovered,
    Handler,
    ReplayRegistry,
    ReplayReport,
    UnknownOperationError,
    _await,
    _clean_payload,
    _error_class,
    _in_event_loop,
    _interval,
    _one_line,
    _stack,
    _Tally,
    _utc_now,
    backoff_delay_s,
)
from biomem.resilience._dlq_sql import DeadLetter, DeadLetterStatus, DeadLetterStore, _Where
from biomem.resilience._dlq_tiered import TieredDeadLetterStore
from biomem.resilience.clock import SYSTEM_CLOCK, Clock
from biomem.resilience.errors import InputError

__all__ = [
    "DeadLetter",
    "DeadLetterDead",
    "DeadLetterEvent",
    "DeadLetterFailed",
    "DeadLetterListener",
    "DeadLetterQueue",
    "DeadLetterRecovered",
    "DeadLetterStatus",
    "DeadLetterStore",
    "DuckDBDeadLetterStore",
    "DuckDBTransactions",
    "Handler",
    "PostgresDeadLetterStore",
    "ReplayRegistry",
    "ReplayReport",
    "TieredDeadLetterStore",
    "UnknownOperationError",
    "backoff_delay_s",
]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


def _call(handler: Handler, payload: dict[str, Any]) -> object:
    return handler(payload)


class DeadLetterQueue:
    """Keep failed operations and replay them through their registered handlers.

    Args:
        store: where letters are kept (DuckDB or PostgreSQL).
        registry: the handlers replay runs.
        clock: waits between manual replays (``rate_per_s``).
        wall_clock: aware datetimes for the timestamps people read.
        max_attempts: failures (the original one included) after which a letter is DEAD.
        base_delay_s: the first retry waits up to this long; each failure doubles it.
        max_delay_s: cap of the backoff.
        rng: jitter source.
        listeners: receive :data:`DeadLetterEvent` s.
    """

    def __init__(
        self,
        store: DeadLetterStore,
        registry: ReplayRegistry,
        *,
        clock: Clock = SYSTEM_CLOCK,
        wall_clock: Callable[[], datetime] = _utc_now,
        max_attempts: int = 8,
        base_delay_s: float = 30.0,
        max_delay_s: float = 3600.0,
        rng: random.Random | None = None,
        listeners: Iterable[DeadLetterListener] = (),
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if base_delay_s < 0:
            raise ValueError(f"base_delay_s must not be negative, got {base_delay_s}")
        if max_delay_s < base_delay_s:
            raise ValueError(f"max_delay_s ({max_delay_s}) must be at least base_delay_s")
        self.store = store
        self.registry = registry
        self._clock = clock
        self._wall_clock = wall_clock
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not secrets
        self._listeners = list(listeners)

    # -- reading ---------------------------------------------------------------

    def add_listener(self, listener: DeadLetterListener) -> None:
        """Subscribe to recovered / failed / dead events (the alert manager does)."""
        self._listeners.append(listener)

    def get(self, letter_id: str) -> DeadLetter | None:
        return self.store.get(letter_id)

    def list(
        self,
        status: DeadLetterStatus | None = None,
        operation: str | None = None,
        limit: int = 100,
        *,
        component: str | None = None,
        error_class: str | None = None,
    ) -> builtins.list[DeadLetter]:
        """Letters by first failure; ``error_class`` matches by full or short class name."""
        return self.store.list(
            status, operation, limit, component=component, error_class=error_class
        )

    def counts(self) -> dict[DeadLetterStatus, int]:
        return self.store.counts()

    def oldest_pending(self) -> datetime | None:
        return self.store.oldest_pending()

    # -- writing ---------------------------------------------------------------

    def put(
        self,
        operation: str,
        payload: dict[str, Any],
        error: BaseException,
        *,
        idempotency_key: str,
        component: str,
        keep_keys: Iterable[str] = (),
    ) -> DeadLetter:
        """Keep a failed operation for replay; returns the stored letter.

        Secret-looking payload fields are masked, except ``keep_keys``, which
        replay needs verbatim. A letter still open under ``idempotency_key``
        is updated instead (the new error and payload; no attempt spent: only
        replays spend attempts, so a long outage cannot kill its own letter).

        Raises:
            InputError: the payload is not JSON-serialisable.
            ValueError: ``operation`` or ``idempotency_key`` is empty.
        """
        if not operation or not idempotency_key:
            raise ValueError("operation and idempotency_key must be non-empty")
        try:
            clean = _clean_payload(payload, frozenset(keep_keys))
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"dead-letter payload of {operation!r} is not JSON-serialisable: {exc}"
            ) from exc
        if operation not in self.registry:
            # Kept anyway: losing the operation would be worse; replay will fail it loudly.
            log.warning("dead_letter_operation_unknown", operation=operation)
        now = self._now()
        letter = DeadLetter(
            id=str(uuid.uuid4()),
            operation=operation,
            payload=clean,
            idempotency_key=idempotency_key,
            error_class=_error_class(error),
            message=_one_line(error),
            stack=_stack(error),
            attempts=1,
            first_failed_at=now,
            last_failed_at=now,
            next_attempt_at=now + self._backoff(1),
            status=DeadLetterStatus.PENDING,
            component=component,
            updated_at=now,
        )
        stored = self.store.put(letter)
        log.warning(
            "dead_letter_put" if stored.id == letter.id else "dead_letter_updated",
            id=stored.id,
            operation=operation,
            component=component,
            attempts=stored.attempts,
            error_class=stored.error_class,
        )
        return stored

    def purge(
        self,
        status: DeadLetterStatus = DeadLetterStatus.DEAD,
        older_than: datetime | timedelta | None = None,
    ) -> int:
        """Delete letters in ``status`` last changed before ``older_than`` (a time or an age)."""
        if isinstance(older_than, timedelta):
            older_than = self._now() - older_than
        return self.store.purge(status, older_than)

    def requeue_stale(self, lease: timedelta = timedelta(0)) -> int:
        """Return letters claimed longer than ``lease`` ago to PENDING; call at start-up.

        With one worker (DuckDB), every REPLAYING letter found at start-up is
        stale: use the default.
        """
        return self.store.requeue_stale(self._now() - lease)

    # -- replay ------------------------------------------------------------------

    def replay_due(
        self, *, limit: int = 50, is_healthy: Callable[[str], bool] = lambda component: True
    ) -> ReplayReport:
        """Replay up to ``limit`` due letters; an unhealthy component's letters wait, unspent."""
        claimed = self.store.claim_due(self._now(), limit)
        tally = _Tally(selected=[letter.id for letter in claimed])
        self._drive(claimed, tally, claimed=True, is_healthy=is_healthy)
        return tally.report()

    async def areplay_due(
        self, *, limit: int = 50, is_healthy: Callable[[str], bool] = lambda component: True
    ) -> ReplayReport:
        """:meth:`replay_due` for event loops: store calls and sync handlers run in threads."""
        claimed = await asyncio.to_thread(self.store.claim_due, self._now(), limit)
        tally = _Tally(selected=[letter.id for letter in claimed])
        await self._adrive(claimed, tally, claimed=True, is_healthy=is_healthy)
        return tally.report()

    def replay(
        self,
        ids: Iterable[str] | None = None,
        *,
        operation: str | None = None,
        component: str | None = None,
        error_class: str | None = None,
        status: DeadLetterStatus | None = DeadLetterStatus.PENDING,
        dry_run: bool = False,
        rate_per_s: float | None = None,
        limit: int = 1000,
    ) -> ReplayReport:
        """Replay letters by hand, now, whatever their ``next_attempt_at``.

        The filters (``operation``, ``component``, ``error_class``) all apply,
        to ``ids`` too: a given letter that does not match is skipped.

        Args:
            ids: these letters, if PENDING or DEAD (``status`` does not apply); None: all matching.
            operation: only letters of this operation.
            component: only letters of this component (``postgresql``...).
            error_class: only letters that failed with this error class, by its
                full name or its last part (``OperationalError``).
            status: with ``ids`` None, PENDING or DEAD letters; None for both.
            dry_run: only report what would run (``selected``); nothing runs or changes.
            rate_per_s: at most this many replays per second, waiting on the clock.
            limit: with ``ids`` None, at most this many letters per status.
        """
        interval = _interval(rate_per_s)
        where = _Where(operation, component, error_class)
        tally, letters = self._select(ids, where, status, limit)
        if not dry_run:
            self._drive(letters, tally, claimed=False, interval=interval)
        return tally.report(dry_run=dry_run)

    async def areplay(
        self,
        ids: Iterable[str] | None = None,
        *,
        operation: str | None = None,
        component: str | None = None,
        error_class: str | None = None,
        status: DeadLetterStatus | None = DeadLetterStatus.PENDING,
        dry_run: bool = False,
        rate_per_s: float | None = None,
        limit: int = 1000,
    ) -> ReplayReport:
        """:meth:`replay` for event loops."""
        interval = _interval(rate_per_s)
        where = _Where(operation, component, error_class)
        tally, letters = await asyncio.to_thread(self._select, ids, where, status, limit)
        if not dry_run:
            await self._adrive(letters, tally, claimed=False, interval=interval)
        return tally.report(dry_run=dry_run)

    # -- machinery ---------------------------------------------------------------

    def _drive(
        self,
        letters: Sequence[DeadLetter],
        tally: _Tally,
        *,
        claimed: bool,
        is_healthy: Callable[[str], bool] | None = None,
        interval: float = 0.0,
    ) -> None:
        """Run each letter (claiming it first unless ``claimed``) and store the outcome."""
        unsettled = {letter.id: letter for letter in letters} if claimed else {}
        health: dict[str, bool] = {}
        started: float | None = None
        try:
            for letter in letters:
                if (wait := self._wait_s(started, interval)) > 0:
                    self._clock.sleep(wait)
                started = self._clock.monotonic()
                current = letter if claimed else self._claim(letter, tally)
                if current is None:
                    continue
                unsettled[current.id] = current
                if is_healthy is not None and not self._healthy(current, is_healthy, health):
                    self._defer(current, tally)
                else:
                    self._emit(self._settle(current, self._run(current), tally))
                del unsettled[current.id]
        finally:
            # Interrupted (KeyboardInterrupt, a store error): unfinished letters go
            # back as they were, no attempt spent, rather than wait for requeue_stale().
            self._release(unsettled.values())

    async def _adrive(
        self,
        letters: Sequence[DeadLetter],
        tally: _Tally,
        *,
        claimed: bool,
        is_healthy: Callable[[str], bool] | None = None,
        interval: float = 0.0,
    ) -> None:
        """:meth:`_drive` with store calls and sync handlers in worker threads."""
        unsettled = {letter.id: letter for letter in letters} if claimed else {}
        health: dict[str, bool] = {}
        started: float | None = None
        try:
            for letter in letters:
                if (wait := self._wait_s(started, interval)) > 0:
                    await self._clock.asleep(wait)
                started = self._clock.monotonic()
                current = letter if claimed else await asyncio.to_thread(self._claim, letter, tally)
                if current is None:
                    continue
                unsettled[current.id] = current
                if is_healthy is not None and not self._healthy(current, is_healthy, health):
                    await asyncio.to_thread(self._defer, current, tally)
                else:
                    error = await self._arun(current)
                    self._emit(await asyncio.to_thread(self._settle, current, error, tally))
                del unsettled[current.id]
        finally:
            # Synchronously: on cancellation, a further await would be cancelled too.
            self._release(unsettled.values())

    def _wait_s(self, started: float | None, interval: float) -> float:
        """How long to wait before the next manual replay to keep to the rate."""
        return 0.0 if started is None else interval - (self._clock.monotonic() - started)

    def _claim(self, letter: DeadLetter, tally: _Tally) -> DeadLetter | None:
        claimed = self.store.claim(letter.id, now=self._now())
        if claimed is None:  # replayed, purged or superseded meanwhile
            tally.skipped.append(letter.id)
        return claimed

    def _now(self) -> datetime:
        now = self._wall_clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("wall_clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def _backoff(self, attempts: int) -> timedelta:
        delay = backoff_delay_s(
            attempts, base_delay_s=self.base_delay_s, max_delay_s=self.max_delay_s, rng=self._rng
        )
        return timedelta(seconds=delay)

    def _select(
        self,
        ids: Iterable[str] | None,
        where: _Where,
        status: DeadLetterStatus | None,
        limit: int,
    ) -> tuple[_Tally, builtins.list[DeadLetter]]:
        tally, letters = _Tally(), []
        if ids is not None:
            for letter_id in dict.fromkeys(ids):  # each once, in the order given
                letter = self.store.get(letter_id)
                if letter is None or letter.status not in _REPLAYABLE or not where.matches(letter):
                    tally.skipped.append(letter_id)
                else:
                    letters.append(letter)
        else:
            if status is not None and status not in _REPLAYABLE:
                raise ValueError(f"only pending or dead letters can be replayed, not {status}")
            for wanted in (status,) if status is not None else _REPLAYABLE:
                letters.extend(
                    self.store.list(
                        wanted,
                        where.operation,
                        limit,
                        component=where.component,
                        error_class=where.error_class,
                    )
                )
        tally.selected.extend(letter.id for letter in letters)
        return tally, letters

    @staticmethod
    def _healthy(
        letter: DeadLetter, is_healthy: Callable[[str], bool], seen: dict[str, bool]
    ) -> bool:
        # Asked once per component per pass: health checks may be slow.
        component = letter.component
        if component not in seen:
            try:
                seen[component] = bool(is_healthy(component))
            except Exception:
                log.exception("dead_letter_health_check_failed", component=component)
                seen[component] = False
        return seen[component]

    def _defer(self, letter: DeadLetter, tally: _Tally) -> None:
        # Push it back a little (no attempt spent), so that a long-down
        # component's letters do not keep other components' letters waiting.
        delay = timedelta(seconds=self.base_delay_s * (0.5 + 0.5 * self._rng.random()))
        now = self._now()
        self.store.release(letter.id, next_attempt_at=now + delay, now=now)
        tally.skipped.append(letter.id)

    def _release(self, letters: Iterable[DeadLetter]) -> None:
        """Put claimed letters we did not finish back as they were due (interrupted pass)."""
        for letter in letters:
            try:
                self.store.release(
                    letter.id, next_attempt_at=letter.next_attempt_at, now=self._now()
                )
            except Exception:  # requeue_stale() at the next start-up returns it
                log.exception("dead_letter_release_failed", id=letter.id)

    def _run(self, letter: DeadLetter) -> Exception | None:
        """Run the letter's handler; the exception it raised, or None."""
        try:
            handler = self.registry.get(letter.operation)
        except UnknownOperationError as exc:
            return exc
        if inspect.iscoroutinefunction(handler) and _in_event_loop():
            # A caller mistake, not the letter's failure: no attempt is spent.
            raise RuntimeError(
                f"the replay handler of {letter.operation!r} is async and an event loop is "
                "running: use areplay_due()/areplay()"
            )
        try:
            result = handler(copy.deepcopy(letter.payload))
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the outcome
            return exc
        return None

    async def _arun(self, letter: DeadLetter) -> Exception | None:
        try:
            handler = self.registry.get(letter.operation)
            payload = copy.deepcopy(letter.payload)
            if inspect.iscoroutinefunction(handler):
                result: object = handler(payload)
            else:  # a blocking handler must not stall the loop
                result = await asyncio.to_thread(_call, handler, payload)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the outcome
            return exc
        return None

    def _settle(
        self, letter: DeadLetter, error: Exception | None, tally: _Tally
    ) -> DeadLetterEvent | None:
        """Store a replay's outcome; the event to emit (None if the letter vanished)."""
        now = self._now()
        if error is None:
            done = self.store.mark_recovered(letter.id, now)
            if done is None:
                return self._vanished(letter, tally)
            tally.recovered.append(letter.id)
            log.info("dead_letter_recovered", id=letter.id, operation=letter.operation)
            return DeadLetterRecovered(done)
        attempts = letter.attempts + 1
        dead = attempts >= self.max_attempts
        failed = self.store.mark_failed(
            letter.id,
            error_class=_error_class(error),
            message=_one_line(error),
            stack=_stack(error),
            attempts=attempts,
            next_attempt_at=now + self._backoff(attempts),
            dead=dead,
            now=now,
        )
        if failed is None:
            return self._vanished(letter, tally)
        fields = {"id": letter.id, "operation": letter.operation, "attempts": attempts}
        if dead:
            tally.dead.append(letter.id)
            log.error("dead_letter_dead", error_class=failed.error_class, **fields)
            return DeadLetterDead(failed)
        tally.failed.append(letter.id)
        log.warning(
            "dead_letter_replay_failed",
            error_class=failed.error_class,
            next_attempt_at=failed.next_attempt_at.isoformat(),
            **fields,
        )
        return DeadLetterFailed(failed)

    @staticmethod
    def _vanished(letter: DeadLetter, tally: _Tally) -> None:
        # Purged or requeued by another worker while the handler ran.
        log.warning("dead_letter_vanished", id=letter.id, operation=letter.operation)
        tally.skipped.append(letter.id)

    def _emit(self, event: DeadLetterEvent | None) -> None:
        if event is None:
            return
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener never breaks replay
                log.exception("dead_letter_listener_failed", event_type=type(event).__name__)
