"""Dead letters in a shared primary store, spilled to a local one while it is out of reach.

The usual reason for a dead letter is that PostgreSQL failed; when the
dead letters live in PostgreSQL too, that same outage must not lose them.
:class:`TieredDeadLetterStore` writes to the primary (PostgreSQL, shared by
every worker, claimed with ``FOR UPDATE SKIP LOCKED``) and, when the primary
cannot take the letter, to the spill store (the local DuckDB file). Letters
in the spill move to the primary at the next claim once it answers again:
inserted there as they are, then deleted here — a crash in between inserts
nothing twice, because adoption ignores an id (or an open idempotency key)
the primary already holds.

Reads combine both stores; a primary that cannot be read is logged and the
spill alone answers, so ``counts()`` during an outage still shows every
letter this process could not hand over. Operations on one letter go to the
store that holds it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import structlog

from biomem.resilience._dlq_sql import DeadLetter, DeadLetterStatus, DeadLetterStore
from biomem.resilience.errors import DependencyError

__all__ = ["AdoptingStore", "RemovableStore", "TieredDeadLetterStore"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

T = TypeVar("T")


class AdoptingStore(DeadLetterStore, Protocol):
    """A store that can take letters from another one as they are."""

    def adopt(self, letter: DeadLetter) -> bool: ...


class RemovableStore(DeadLetterStore, Protocol):
    """A store that can give letters away."""

    def delete(self, letter_id: str) -> bool: ...


def _adoption(store: AdoptingStore, letter: DeadLetter) -> Callable[[], bool]:
    return lambda: store.adopt(letter)


class TieredDeadLetterStore:
    """A :class:`DeadLetterStore` over a primary and a local spill.

    Args:
        primary: the shared store (PostgreSQL).
        spill: the local store that takes letters while the primary cannot.
        primary_lease: letters claimed in the primary are requeued as stale
            only this much later than asked: other workers sharing the table
            may be replaying them now (the spill is this process's alone).
        unavailable: errors meaning "the primary is out of reach now" for
            reads; a write falls back to the spill on any error, since a
            letter that is not written anywhere is lost.
    """

    def __init__(
        self,
        primary: AdoptingStore,
        spill: RemovableStore,
        *,
        primary_lease: timedelta = timedelta(0),
        unavailable: tuple[type[BaseException], ...] = (DependencyError, OSError),
    ) -> None:
        self.primary = primary
        self.spill = spill
        self.primary_lease = primary_lease
        self._unavailable = unavailable
        self._schema_ready = False

    # -- helpers -----------------------------------------------------------------

    def _primary(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on the primary; None (logged) when the primary is out of reach."""
        try:
            if not self._schema_ready:
                self.primary.ensure_schema()
                self._schema_ready = True
            return fn()
        except self._unavailable as exc:
            log.warning(
                "dead_letter_primary_unavailable", during=what, error_class=type(exc).__name__
            )
            return None

    def _holder(self, letter_id: str) -> DeadLetterStore:
        return self.spill if self.spill.get(letter_id) is not None else self.primary

    def drain_spill(self) -> int:
        """Move spilled letters that are not being replayed to the primary; return how many."""
        moved = 0
        for status in (DeadLetterStatus.PENDING, DeadLetterStatus.DEAD, DeadLetterStatus.RECOVERED):
            while True:
                batch = self.spill.list(status=status, limit=200)
                if not batch:
                    break
                for letter in batch:
                    if self._primary("drain", _adoption(self.primary, letter)) is None:
                        return moved
                    self.spill.delete(letter.id)
                    moved += 1
        if moved:
            log.info("dead_letters_moved_to_primary", count=moved)
        return moved

    # -- the DeadLetterStore protocol ---------------------------------------------

    def ensure_schema(self) -> None:
        self.spill.ensure_schema()
        self._primary("ensure_schema", lambda: None)

    def put(self, letter: DeadLetter) -> DeadLetter:
        # A letter spilled earlier under the same key meets this one at the
        # drain: adoption keeps the primary's open letter (the same work).
        try:
            if not self._schema_ready:
                self.primary.ensure_schema()
                self._schema_ready = True
            return self.primary.put(letter)
        except Exception as exc:  # noqa: BLE001 - any failure: the letter must land somewhere
            log.warning(
                "dead_letter_spilled",
                operation=letter.operation,
                error_class=type(exc).__name__,
            )
            return self.spill.put(letter)

    def get(self, letter_id: str) -> DeadLetter | None:
        found = self.spill.get(letter_id)
        if found is not None:
            return found
        return self._primary("get", lambda: self.primary.get(letter_id))

    def list(
        self,
        status: DeadLetterStatus | None = None,
        operation: str | None = None,
        limit: int = 100,
        *,
        component: str | None = None,
        error_class: str | None = None,
    ) -> builtins.list[DeadLetter]:
        def listed(store: DeadLetterStore) -> builtins.list[DeadLetter]:
            return store.list(
                status, operation, limit, component=component, error_class=error_class
            )

        local = listed(self.spill)
        shared = self._primary("list", lambda: listed(self.primary)) or []
        merged = sorted([*local, *shared], key=lambda d: (d.first_failed_at, d.id))
        return merged[: max(0, limit)]

    def claim_due(self, now: datetime, limit: int) -> builtins.list[DeadLetter]:
        self.drain_spill()
        claimed = self._primary("claim_due", lambda: self.primary.claim_due(now, limit)) or []
        if len(claimed) < limit:
            # Whatever could not move (the primary is down) is replayed from here.
            claimed += self.spill.claim_due(now, limit - len(claimed))
        return claimed

    def claim(self, letter_id: str, *, now: datetime) -> DeadLetter | None:
        if self.spill.get(letter_id) is not None:
            self.drain_spill()  # a manual replay: the letter moves first when it can
        return self._holder(letter_id).claim(letter_id, now=now)

    def release(
        self, letter_id: str, *, next_attempt_at: datetime, now: datetime
    ) -> DeadLetter | None:
        holder = self._holder(letter_id)
        return holder.release(letter_id, next_attempt_at=next_attempt_at, now=now)

    def mark_recovered(self, letter_id: str, now: datetime) -> DeadLetter | None:
        return self._holder(letter_id).mark_recovered(letter_id, now)

    def mark_failed(
        self,
        letter_id: str,
        *,
        error_class: str,
        message: str,
        stack: str,
        attempts: int,
        next_attempt_at: datetime,
        dead: bool,
        now: datetime,
    ) -> DeadLetter | None:
        return self._holder(letter_id).mark_failed(
            letter_id,
            error_class=error_class,
            message=message,
            stack=stack,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            dead=dead,
            now=now,
        )

    def purge(self, status: DeadLetterStatus, older_than: datetime | None = None) -> int:
        local = self.spill.purge(status, older_than)
        # A purge that did not reach the primary must say so: raise, not undercount.
        return local + self.primary.purge(status, older_than)

    def counts(self) -> dict[DeadLetterStatus, int]:
        local = self.spill.counts()
        shared = self._primary("counts", self.primary.counts) or {}
        return {status: local.get(status, 0) + shared.get(status, 0) for status in DeadLetterStatus}

    def oldest_pending(self) -> datetime | None:
        found = [self.spill.oldest_pending(), self._primary("oldest", self.primary.oldest_pending)]
        present = [when for when in found if when is not None]
        return min(present) if present else None

    def requeue_stale(self, older_than: datetime) -> int:
        local = self.spill.requeue_stale(older_than)
        shared = self._primary(
            "requeue_stale", lambda: self.primary.requeue_stale(older_than - self.primary_lease)
        )
        return local + (shared or 0)
