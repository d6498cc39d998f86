"""A component's last hour in fixed one-minute slots, bounded whatever the check interval.

The monitor's ``history`` is a count of recent results (what /health/detailed
lists and recovery's "N checks in a row" reads); at a 1 s interval 240 of them
are four minutes, at 1 h ten days. The status page's strip wants the last
hour at any interval, so the monitor also folds every result into this
timeline: one bucket per wall-clock minute (worst status, last status, number
of checks). It holds at most ``slots + 1`` buckets — the hour, and the one
before it whose last result may still be in effect — so at a 1 s interval it
keeps 61 small records instead of 3600 results.

A minute without a check is not necessarily a gap: at an interval above a
minute most minutes have none. A result holds until the next one is due,
``stale_after_s`` after it (the monitor passes twice the interval plus the
slowest check's timeout: its loop waits up to 1.1 intervals after a run that
may take a timeout), so such minutes show the last status, *carried*. A minute
past that with no check is a *gap* and shows as unknown: the monitor stopped
or hung, or — on demand — nobody asked.

Not thread-safe: the monitor calls it under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from biomem.health.model import Status

__all__ = ["StatusTimeline", "TimelineSlot"]

SLOT_S = 60.0
SLOTS = 60  # the last hour, in minutes


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineSlot:
    """One slot of the strip, oldest first."""

    start: datetime  # UTC, on a slot boundary
    status: Status  # the worst checked in the slot; else the result in effect; else UNKNOWN
    checks: int  # results that fell in the slot
    carried: bool = False  # no check in the slot: ``status`` is the last result, still in effect

    @property
    def gap(self) -> bool:
        """No check in the slot and none in effect: shown as unknown."""
        return self.checks == 0 and not self.carried


@dataclass(slots=True)
class _Bucket:
    index: int  # slot number since the epoch
    worst: Status
    last: Status
    last_at: datetime
    checks: int


class StatusTimeline:
    """Results folded into fixed wall-clock slots; memory bounded by the number of slots.

    Args:
        stale_after_s: how long a result stays in effect in the slots after its own.
        slot_s: width of a slot in seconds.
        slots: how many slots :meth:`slots` returns (the newest holds ``now``).
    """

    def __init__(self, *, stale_after_s: float, slot_s: float = SLOT_S, slots: int = SLOTS) -> None:
        if slot_s <= 0 or slots < 1 or stale_after_s < 0:
            raise ValueError("slot_s > 0, slots >= 1 and stale_after_s >= 0 are required")
        self.stale_after_s = stale_after_s
        self.slot_s = slot_s
        self.size = slots
        self._buckets: list[_Bucket] = []  # by index, ascending; at most slots + 1

    def __len__(self) -> int:
        """Buckets held (at most ``slots + 1``, however many results were recorded)."""
        return len(self._buckets)

    def _index(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self.slot_s)

    def record(self, at: datetime, status: Status) -> None:
        """Fold one result (its checked_at and status) into its slot."""
        index = self._index(at)
        buckets = self._buckets
        # Results arrive in order but for concurrent runs a moment apart: search from the end.
        position = len(buckets)
        while position > 0 and buckets[position - 1].index > index:
            position -= 1
        if position > 0 and buckets[position - 1].index == index:
            bucket = buckets[position - 1]
            bucket.checks += 1
            if status.rank > bucket.worst.rank:
                bucket.worst = status
            if at >= bucket.last_at:
                bucket.last, bucket.last_at = status, at
            return
        if position == 0 and len(buckets) > self.size:
            return  # older than everything kept: it would be trimmed at once
        buckets.insert(position, _Bucket(index, status, status, at, 1))
        del buckets[: max(0, len(buckets) - (self.size + 1))]

    def slots(self, now: datetime) -> list[TimelineSlot]:
        """The last ``slots`` slots up to the one holding ``now``, oldest first."""
        last = self._index(now)
        first = last - self.size + 1
        by_index = {b.index: b for b in self._buckets}
        # The newest bucket before the window: its last result may carry into it.
        before = [b for b in self._buckets if b.index < first]
        previous = before[-1] if before else None
        out = []
        for index in range(first, last + 1):
            start = datetime.fromtimestamp(index * self.slot_s, UTC)
            bucket = by_index.get(index)
            if bucket is not None:
                out.append(TimelineSlot(start=start, status=bucket.worst, checks=bucket.checks))
                previous = bucket
            elif previous is not None and (start - previous.last_at).total_seconds() < (
                self.stale_after_s
            ):
                out.append(TimelineSlot(start=start, status=previous.last, checks=0, carried=True))
            else:
                out.append(TimelineSlot(start=start, status=Status.UNKNOWN, checks=0))
        return out
