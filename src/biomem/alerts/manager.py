"""The alert manager: Alertmanager's grouping, waiting, repeating and silencing, in one process.

Life of an alert (times on the injected monotonic clock)::

    fire ─► PENDING in its group ─ group_wait ─► notified FIRING ─ repeat_interval ─► repeat
                │ resolve (never notified):                │ resolve
                ▼ dropped, nothing is sent                 ▼
                                                  RESOLVING ─ resolve_settle_s ─► notified RESOLVED
                                                     │ fire again within the settle time:
                                                     └► FIRING again, nothing is sent (flap damping)

Alerts are grouped by ``group_by`` labels (``alertname``). A group flushes,
in one notification per receiver, when a new alert has waited
``group_wait_s``, when a resolved alert has settled, or when
``repeat_interval_s`` has passed since the last flush; the notification
holds every firing alert of the group plus the settled resolved ones.
Silenced alerts are left out while the silence lasts.

Nothing here runs by itself: the daemon calls :meth:`AlertManager.tick`
(every second, say) and a :class:`~biomem.alerts.webhook.WebhookDeliverer`
sends what the outbox holds. State is in memory; the outbox is durable.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from biomem.alerts.model import (
    AlertStatus,
    AlertView,
    Receiver,
    Silence,
    build_payload,
    clean_labels,
    group_key,
    rfc3339,
)
from biomem.alerts.model import fingerprint as fingerprint_of
from biomem.alerts.outbox import NewNotification, NotificationStatus, Outbox
from biomem.resilience.clock import Clock

__all__ = ["AlertManager", "AlertStats", "WallClock"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

WallClock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class _Alert:
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
class _Group:
    key: str
    labels: dict[str, str]
    fingerprints: dict[str, None] = field(default_factory=dict)  # ordered set
    pending_since: float | None = None  # when an un-notified firing alert arrived
    last_flush: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertStats:
    """Numbers for metrics (the outbox ones are read at call time)."""

    firing: int  # firing, not silenced (notified or still waiting)
    silenced: int
    silences: int
    notifications_enqueued: int  # since start, one per receiver
    outbox_pending: int
    outbox_delivered: int
    outbox_failed: int


class AlertManager:
    """Groups, delays, repeats and silences alerts; enqueues notifications in the outbox.

    Thread-safe: adapters may fire from breaker or monitor threads while the
    daemon ticks. The lock is re-entrant, because a store breaker can emit an
    event (and so fire an alert) from inside :meth:`tick`'s outbox write.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        wall_clock: WallClock = _utc_now,
        outbox: Outbox,
        receivers: Sequence[Receiver],
        group_wait_s: float = 10.0,
        repeat_interval_s: float = 4 * 3600.0,
        resolve_settle_s: float = 30.0,
        external_url: str = "",
        group_by: Sequence[str] = ("alertname",),
        recent_max: int = 50,
    ) -> None:
        for name, value in (
            ("group_wait_s", group_wait_s),
            ("repeat_interval_s", repeat_interval_s),
            ("resolve_settle_s", resolve_settle_s),
        ):
            if value < 0:
                raise ValueError(f"AlertManager.{name} must be ≥ 0, got {value!r}")
        self._clock = clock
        self._wall = wall_clock
        self._outbox = outbox
        self._receivers = tuple(receivers)
        self._group_wait = float(group_wait_s)
        self._repeat = float(repeat_interval_s)
        self._settle = float(resolve_settle_s)
        self._external_url = external_url
        self._group_by = tuple(group_by)
        self._lock = threading.RLock()
        self._alerts: dict[str, _Alert] = {}
        self._groups: dict[str, _Group] = {}
        self._silences: dict[str, Silence] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_max)
        self._enqueued = 0
        self._undelivered = 0  # last count read, shown if the store cannot answer

    # ----------------------------------------------------------------- alerts

    def fire(
        self, labels: Mapping[str, object], annotations: Mapping[str, object] | None = None
    ) -> str:
        """Report ``labels`` firing (again); return the alert's fingerprint."""
        clean = clean_labels(labels)
        notes = clean_labels(annotations or {}, what="annotations")
        fp = fingerprint_of(clean)
        now = self._clock.monotonic()
        with self._lock:
            alert = self._alerts.get(fp)
            if alert is None:
                alert = _Alert(
                    fingerprint=fp, labels=clean, annotations=notes, starts_at=self._wall()
                )
                self._alerts[fp] = alert
                group = self._group_for(clean)
                group.fingerprints[fp] = None
                if group.pending_since is None:
                    group.pending_since = now
                log.info("alert_firing", alertname=clean["alertname"], fingerprint=fp)
                return fp
            alert.annotations = notes
            if alert.status is AlertStatus.RESOLVED:
                # Fired again before the resolution settled: it never stopped, as
                # far as receivers know; no resolved, no new firing (flap damping).
                alert.status, alert.ends_at, alert.resolved_mono = AlertStatus.FIRING, None, None
            return fp

    def resolve(
        self, labels: Mapping[str, object] | None = None, *, fingerprint: str | None = None
    ) -> bool:
        """Report an alert (by labels or fingerprint) resolved; False if none is active."""
        if (labels is None) == (fingerprint is None):
            raise ValueError("resolve() takes labels or a fingerprint, exactly one")
        fp = fingerprint if fingerprint is not None else fingerprint_of(clean_labels(labels or {}))
        now = self._clock.monotonic()
        with self._lock:
            alert = self._alerts.get(fp)
            if alert is None or alert.status is AlertStatus.RESOLVED:
                return False
            alert.status, alert.ends_at, alert.resolved_mono = (
                AlertStatus.RESOLVED,
                self._wall(),
                now,
            )
            if alert.notified is None and not alert.owed:
                # Resolved within the group wait: receivers never heard of it, nothing to send.
                self._forget(alert)
            log.info("alert_resolved", alertname=alert.labels["alertname"], fingerprint=fp)
            return True

    def _group_for(self, labels: Mapping[str, str]) -> _Group:
        group_labels = {k: labels[k] for k in self._group_by if k in labels}
        key = group_key(group_labels)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key=key, labels=group_labels)
        return group

    def _forget(self, alert: _Alert) -> None:
        self._alerts.pop(alert.fingerprint, None)
        for key, group in list(self._groups.items()):
            group.fingerprints.pop(alert.fingerprint, None)
            if not group.fingerprints:
                del self._groups[key]
        self._recent.appendleft(_describe(alert, state="resolved"))

    # ----------------------------------------------------------------- silences

    def silence(self, matchers: Mapping[str, str], until: datetime, comment: str = "") -> str:
        """Mute matching alerts until ``until``; return the silence's id."""
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=dict(matchers),
            until=until,
            comment=comment,
            created_at=self._wall(),
        )
        with self._lock:
            self._silences[silence.id] = silence
        return silence.id

    def unsilence(self, silence_id: str) -> bool:
        """End a silence now; False if there was none with that id."""
        with self._lock:
            return self._silences.pop(silence_id, None) is not None

    def silences(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.as_dict() for s in self._silences.values()]

    def _silenced(self, alert: _Alert, wall: datetime) -> bool:
        return any(s.active(wall) and s.matches(alert.labels) for s in self._silences.values())

    # ----------------------------------------------------------------- time

    def tick(self) -> int:
        """Do the work that time makes due; return how many notifications were enqueued.

        The outbox write comes before any state change, so if it fails the
        same notifications are built again on the next tick.
        """
        now = self._clock.monotonic()
        wall = self._wall()
        with self._lock:
            for sid in [sid for sid, s in self._silences.items() if not s.active(wall)]:
                del self._silences[sid]
            items: list[NewNotification] = []
            flushed: list[tuple[_Group, list[_Alert], list[_Alert]]] = []
            for group in list(self._groups.values()):
                planned = self._plan(group, now, wall)
                if planned is not None:
                    firing, settled = planned
                    for alert in firing:
                        alert.owed = True  # before the write, which may fail
                    items.extend(self._notifications(group, firing, settled))
                    flushed.append((group, firing, settled))
            if items:
                self._outbox.enqueue(items, now=wall)
            for group, firing, settled in flushed:
                for alert in firing:
                    alert.notified = AlertStatus.FIRING
                for alert in settled:
                    alert.notified = AlertStatus.RESOLVED
                    self._forget(alert)
                group.last_flush, group.pending_since = now, None
            self._enqueued += len(items)
            return len(items)

    def _plan(
        self, group: _Group, now: float, wall: datetime
    ) -> tuple[list[_Alert], list[_Alert]] | None:
        """The group's firing and settled alerts if it must flush now, else None."""
        members = [self._alerts[fp] for fp in group.fingerprints if fp in self._alerts]
        firing = [
            a for a in members if a.status is AlertStatus.FIRING and not self._silenced(a, wall)
        ]
        settled = [
            a
            for a in members
            if a.status is AlertStatus.RESOLVED
            and a.resolved_mono is not None
            and now - a.resolved_mono >= self._settle
        ]
        fresh = any(a.notified is not AlertStatus.FIRING for a in firing)
        if not fresh:
            group.pending_since = None
        elif group.pending_since is None:  # e.g. its silence just ended
            group.pending_since = now
        due_new = (
            fresh
            and group.pending_since is not None
            and now - group.pending_since >= self._group_wait
        )
        due_repeat = (
            any(a.notified is AlertStatus.FIRING for a in firing)
            and group.last_flush is not None
            and now - group.last_flush >= self._repeat
        )
        if due_new or settled or due_repeat:
            return firing, settled
        return None

    def _notifications(
        self, group: _Group, firing: list[_Alert], settled: list[_Alert]
    ) -> list[NewNotification]:
        out = []
        for receiver in self._receivers:
            alerts = firing + (settled if receiver.send_resolved else [])
            if not alerts:
                continue
            payload = build_payload(
                receiver=receiver.name,
                group_labels=group.labels,
                alerts=[a.view() for a in alerts],
                external_url=self._external_url,
            )
            out.append(
                NewNotification(
                    receiver=receiver.name,
                    group_key=group.key,
                    status_kind=payload["status"],
                    fingerprints=tuple(a.fingerprint for a in alerts),
                    payload=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
                )
            )
        return out

    # ----------------------------------------------------------------- reading

    def snapshot(self) -> dict[str, Any]:
        """``{"active": [...], "recent": [...], "undelivered": n}`` for ``/health/alerts``."""
        wall = self._wall()
        with self._lock:
            active = []
            for alert in self._alerts.values():
                if self._silenced(alert, wall):
                    state = "suppressed"
                elif alert.status is AlertStatus.RESOLVED:
                    state = "resolving"
                else:
                    state = "active" if alert.notified is AlertStatus.FIRING else "pending"
                active.append(_describe(alert, state=state))
            recent = list(self._recent)
        try:
            self._undelivered = self._outbox.counts()[NotificationStatus.PENDING]
        except Exception:  # the store is down: show the last count rather than fail
            log.warning("alert_outbox_count_failed", exc_info=True)
        return {"active": active, "recent": recent, "undelivered": self._undelivered}

    def stats(self) -> AlertStats:
        wall = self._wall()
        with self._lock:
            live = [a for a in self._alerts.values() if a.status is AlertStatus.FIRING]
            silenced = sum(1 for a in live if self._silenced(a, wall))
            silences, enqueued = len(self._silences), self._enqueued
        counts = self._outbox.counts()
        return AlertStats(
            firing=len(live) - silenced,
            silenced=silenced,
            silences=silences,
            notifications_enqueued=enqueued,
            outbox_pending=counts[NotificationStatus.PENDING],
            outbox_delivered=counts[NotificationStatus.DELIVERED],
            outbox_failed=counts[NotificationStatus.FAILED],
        )


def _describe(alert: _Alert, *, state: str) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "status": alert.status.value,
        "state": state,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at),
    }
