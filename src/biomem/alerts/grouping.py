"""Alert groups and when they flush: Alertmanager's group_wait, group_interval and repeat.

A group collects the alerts that share its ``group_by`` labels. It is told
about in one notification per receiver, when :func:`plan` says so::

    first notification  ─ a new firing alert has waited group_wait
    later ones          ─ something changed (a new firing alert, a resolution that
                          settled) and group_interval has passed since the last one
    repeat              ─ alerts still firing and repeat_interval has passed

Times are seconds on the manager's monotonic clock. :func:`plan` is pure:
it decides from the group, its alerts and ``now``, and changes nothing but
the group's ``pending_since`` bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from biomem.alerts.model import AlertStatus, AlertView, rfc3339

__all__ = ["Alert", "Group", "Timing", "describe", "plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """The waits of the group life cycle, in seconds (all ≥ 0)."""

    group_wait_s: float = 10.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    resolve_settle_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("group_wait_s", "group_interval_s", "repeat_interval_s", "resolve_settle_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"AlertManager.{name} must be ≥ 0, got {value!r}")


@dataclass(slots=True, kw_only=True)
class Alert:
    """One alert's state in the manager."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    status: AlertStatus = AlertStatus.FIRING
    ends_at: datetime | None = None
    resolved_mono: float | None = None
    notified: AlertStatus | None = None  # what receivers were last told
    # Its firing notification came due; if writing it failed (the store unwritable, say
    # on a full disk), receivers are still owed the incident once it resolves.
    owed: bool = False

    def view(self) -> AlertView:
        return AlertView(
            fingerprint=self.fingerprint,
            status=self.status,
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
        )


@dataclass(slots=True, kw_only=True)
class Group:
    """The alerts sharing one set of ``group_by`` labels."""

    key: str
    labels: dict[str, str]
    fingerprints: dict[str, None] = field(default_factory=dict)  # ordered set
    pending_since: float | None = None  # when an un-notified firing alert arrived
    last_flush: float | None = None  # when the group was last notified


def plan(
    group: Group,
    members: list[Alert],
    now: float,
    timing: Timing,
    silenced: Callable[[Alert], bool],
) -> tuple[list[Alert], list[Alert]] | None:
    """The group's firing and settled alerts if it must flush at ``now``, else None.

    Silenced alerts are left out of the firing ones; a resolution is settled
    once it has held for ``resolve_settle_s`` (an alert firing again before
    that was never resolved, as far as receivers know).
    """
    firing = [a for a in members if a.status is AlertStatus.FIRING and not silenced(a)]
    settled = [
        a
        for a in members
        if a.status is AlertStatus.RESOLVED
        and a.resolved_mono is not None
        and now - a.resolved_mono >= timing.resolve_settle_s
    ]
    fresh = any(a.notified is not AlertStatus.FIRING for a in firing)
    if not fresh:
        group.pending_since = None
    elif group.pending_since is None:  # e.g. its silence just ended
        group.pending_since = now
    if group.last_flush is None:
        # Never notified: wait group_wait so that alerts firing together go out together.
        # An alert whose firing notification could not be written (the outbox
        # failed) and which resolved since is owed to receivers as resolved.
        due = (
            fresh
            and group.pending_since is not None
            and now - group.pending_since >= timing.group_wait_s
        ) or any(a.owed for a in settled)
    else:
        since = now - group.last_flush
        changed = fresh or bool(settled)
        repeat = any(a.notified is AlertStatus.FIRING for a in firing)
        due = (changed and since >= timing.group_interval_s) or (
            repeat and since >= timing.repeat_interval_s
        )
    return (firing, settled) if due else None


def describe(alert: Alert, *, state: str) -> dict[str, Any]:
    """The alert as /health/alerts lists it."""
    return {
        "fingerprint": alert.fingerprint,
        "status": alert.status.value,
        "state": state,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at),
    }
