"""Alert groups and when they flush: Alertmanager's group_wait, group_interval and repeat.

A group collects the alerts that share its ``group_by`` labels. It is told
about in one notification per receiver, when :func:`plan` says so::

    first notification  ─ a new firing alert has waited group_wait
    later ones          ─ something changed (a new firing alert that has waited
                          group_wait, a resolution that settled) and group_interval
                          has passed since the last one
    repeat              ─ alerts still firing and repeat_interval has passed

An incident raises its alerts at different moments (a health check fails,
then the breaker opens) and clears them at different moments (the check
passes, then the breaker's trial calls close it). Two rules keep it to one
firing and one resolved notification:

- a new alert waits group_wait before it is told, also in a group that was
  notified before (the daemon's one group lives as long as any alert does),
  so the alerts of an incident go out together, and a passing state (degraded
  for a check while a breaker's trial calls run) that ends within group_wait
  is never told;
- a settled resolution waits while another alert of its group is still
  settling (at most one settle time more), so the resolutions of an incident
  go out together. Meanwhile an alert that is settling is, as far as receivers
  know, still firing: it is listed as firing in any notification of its group.

Which receivers a flush is sent to is the manager's business: only those
with something they were not told (see :attr:`Group.told`).

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

__all__ = ["Alert", "Flush", "Group", "Timing", "describe", "plan"]


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
    # Restored at start from the outbox (receivers were told it is firing before a
    # restart): resolved at this monotonic time unless its source fires it again first.
    restored_until: float | None = None
    # Restored: the receivers told it is firing, the only ones its resolution is owed
    # to (another may have heard it resolved already). None: every accepting receiver.
    told_to: frozenset[str] | None = None

    def view(self, *, as_firing: bool = False) -> AlertView:
        """The alert for a notification; ``as_firing``: as receivers still know it (settling)."""
        return AlertView(
            fingerprint=self.fingerprint,
            status=AlertStatus.FIRING if as_firing else self.status,
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.starts_at,
            ends_at=None if as_firing else self.ends_at,
        )


@dataclass(slots=True, kw_only=True)
class Group:
    """The alerts sharing one set of ``group_by`` labels."""

    key: str
    labels: dict[str, str]
    fingerprints: dict[str, None] = field(default_factory=dict)  # ordered set
    pending_since: float | None = None  # when an un-notified firing alert arrived
    last_flush: float | None = None  # when the group was last notified
    # receiver -> the fingerprints it was last told are firing: a flush reaches a
    # receiver only with something new to it (Alertmanager's notification log).
    told: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flush:
    """What a due group sends: its alerts by how receivers are to hear of them."""

    firing: list[Alert]  # firing, not silenced (some perhaps new to receivers)
    settling: list[Alert]  # resolved, not settled yet, told firing: listed as firing
    settled: list[Alert]  # resolved and settled: listed as resolved, then forgotten
    repeat: bool  # repeat_interval has passed: receivers hear of firing alerts again


def plan(
    group: Group,
    members: list[Alert],
    now: float,
    timing: Timing,
    silenced: Callable[[Alert], bool],
) -> Flush | None:
    """What the group sends if it must flush at ``now``, else None.

    Silenced alerts are left out of the firing ones; a resolution is settled
    once it has held for ``resolve_settle_s`` (an alert firing again before
    that was never resolved, as far as receivers know).
    """
    settle = timing.resolve_settle_s
    firing = [a for a in members if a.status is AlertStatus.FIRING and not silenced(a)]
    resolved = [a for a in members if a.status is AlertStatus.RESOLVED]
    settled = [a for a in resolved if _resolved_for(a, now) >= settle]
    unsettled = [a for a in resolved if _resolved_for(a, now) < settle]
    settling = [a for a in unsettled if a.notified is AlertStatus.FIRING and not silenced(a)]
    if unsettled and all(_resolved_for(a, now) < 2 * settle for a in settled):
        # Another alert of the group is settling: its resolution goes out with these.
        settled = []
    fresh = any(a.notified is not AlertStatus.FIRING for a in firing)
    if not fresh:
        group.pending_since = None
    elif group.pending_since is None:  # e.g. its silence just ended
        group.pending_since = now
    # A new firing alert waits group_wait, so that alerts firing together go out together.
    waited = group.pending_since is not None and now - group.pending_since >= timing.group_wait_s
    repeat = False
    if group.last_flush is None:
        # Never notified. An alert whose firing notification could not be written
        # (the outbox failed) and which resolved since is owed to receivers as resolved.
        due = waited or any(a.owed for a in settled)
    else:
        since = now - group.last_flush
        told = any(a.notified is AlertStatus.FIRING for a in firing + settling)
        repeat = told and since >= timing.repeat_interval_s
        due = ((waited or bool(settled)) and since >= timing.group_interval_s) or repeat
    if not due:
        return None
    return Flush(firing=firing, settling=settling, settled=settled, repeat=repeat)


def _resolved_for(alert: Alert, now: float) -> float:
    """How long a resolved alert has been resolved (0 when not known)."""
    return 0.0 if alert.resolved_mono is None else now - alert.resolved_mono


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
