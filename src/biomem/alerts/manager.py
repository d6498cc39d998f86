"""The alert manager: Alertmanager's grouping, waiting, repeating and silencing, in one process.

Life of an alert (times on the injected monotonic clock)::

    fire ─► PENDING in its group ─ group_wait ─► notified FIRING ─ repeat_interval ─► repeat
                │ resolve (never notified):                │ resolve
                ▼ dropped, nothing is sent                 ▼
                                                  RESOLVING ─ resolve_settle_s ─► notified RESOLVED
                                                     │ fire again within the settle time:
                                                     └► FIRING again, nothing is sent (flap damping)

Alerts are grouped by ``group_by`` labels (``alertname``); when a group
flushes (group_wait, group_interval, repeat_interval: see
:mod:`biomem.alerts.grouping`) it goes out in one notification per receiver
whose matchers accept its alerts and that has something new to hear, holding
every firing alert of the group (settling ones as firing) plus the settled
resolved ones. Silenced alerts are left out while a silence lasts; silences
are durable (:mod:`biomem.alerts.silences`).

Nothing here runs by itself: the daemon calls :meth:`AlertManager.tick`
(every second, say) and a :class:`~biomem.alerts.webhook.WebhookDeliverer`
sends what the outbox holds. Alert state is in memory; the outbox and the
silences are durable.

Restarts: at start the manager restores the alerts receivers were last told
are firing, from the newest outbox notification per receiver and group (see
:mod:`biomem.alerts.restore`), as already notified: same fingerprint, same
startsAt, each with the receivers it was told to. A restored alert that its
source fires again (the health checks, breakers and resource readings of the
new process fire on the current state) simply goes on: nothing is sent. One
that is not fired again within ``restore_grace_s`` of the start is resolved
then, and its resolution goes the normal way (settle, group interval): one
resolved notification, with endsAt, to the receivers told it was firing and
only to them. Alertnames in ``restore_keep`` (``DeadLetterDead``: no source
fires it again, only a person ends it) stay firing until resolved. The group's
last notification time is carried over from the outbox, so group_interval and
repeat_interval go on across the restart (a repeat waits until the grace and a
settle time have passed, when what is still firing is known).
"""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from biomem.alerts.grouping import Alert, Flush, Group, Timing, describe, plan
from biomem.alerts.model import (
    AlertStatus,
    Receiver,
    Severity,
    build_payload,
    clean_labels,
    group_key,
)
from biomem.alerts.model import fingerprint as fingerprint_of
from biomem.alerts.outbox import NewNotification, Notification, NotificationStatus, Outbox
from biomem.alerts.restore import expire_restored, restore, told_firing
from biomem.alerts.silences import Silence, Silences, SilenceStore, new_silence
from biomem.resilience.clock import Clock

__all__ = ["AlertManager", "AlertStats", "WallClock"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

WallClock = Callable[[], datetime]
T = TypeVar("T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StoreRead(Protocol):
    """Runs a store read and returns its result (directly, or bounded in time)."""

    def __call__(self, fn: Callable[[], T], /) -> T: ...


def _read_now(fn: Callable[[], T], /) -> T:
    return fn()


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertStats:
    """Numbers for metrics (the outbox ones are read at call time)."""

    firing: int  # firing, not silenced (notified or still waiting)
    firing_by_severity: Mapping[str, int]  # the same, by severity; every severity present
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

    Args:
        silence_store: where silences are kept; its active ones are loaded now.
            None keeps them in memory only (tests).
        restore_grace_s: how long after start a restored alert (told firing before a
            restart) waits for its source to fire it again before it is resolved;
            None: ``group_wait_s`` (the daemon passes more, see
            :class:`~biomem.alerting.AlertService`).
        restore_keep: alertnames whose restored alerts are never resolved by the
            grace, because no source fires them again at start.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        wall_clock: WallClock = _utc_now,
        outbox: Outbox,
        receivers: Sequence[Receiver],
        group_wait_s: float = 10.0,
        group_interval_s: float = 300.0,
        repeat_interval_s: float = 4 * 3600.0,
        resolve_settle_s: float = 30.0,
        external_url: str = "",
        group_by: Sequence[str] = ("alertname",),
        recent_max: int = 50,
        silence_store: SilenceStore | None = None,
        restore_grace_s: float | None = None,
        restore_keep: Collection[str] = (),
    ) -> None:
        self._timing = Timing(
            group_wait_s=float(group_wait_s),
            group_interval_s=float(group_interval_s),
            repeat_interval_s=float(repeat_interval_s),
            resolve_settle_s=float(resolve_settle_s),
        )
        self._clock = clock
        self._wall = wall_clock
        self._outbox = outbox
        self._receivers = tuple(receivers)
        self._external_url = external_url
        self._group_by = tuple(group_by)
        self._lock = threading.RLock()
        self._alerts: dict[str, Alert] = {}
        self._groups: dict[str, Group] = {}
        self._silences = Silences(silence_store, now=wall_clock())
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_max)
        self._enqueued = 0
        self._undelivered = 0  # last count read, shown if the store cannot answer
        grace = self._timing.group_wait_s if restore_grace_s is None else float(restore_grace_s)
        if not grace >= 0:
            raise ValueError(f"AlertManager.restore_grace_s must be ≥ 0, got {restore_grace_s!r}")
        self._restore(grace, frozenset(restore_keep))

    # ----------------------------------------------------------------- restart

    def _restore(self, grace_s: float, keep: frozenset[str]) -> None:
        """Take back the alerts receivers were last told are firing (see the module doc)."""
        try:
            restored = told_firing(self._outbox.latest())
        except Exception:  # an unreadable store must not stop the daemon; nothing restored
            log.warning("alert_restore_failed", exc_info=True)
            return
        for alert, last_flush in restore(
            restored,
            now=self._clock.monotonic(),
            wall=self._wall(),
            timing=self._timing,
            grace_s=grace_s,
            keep=keep,
        ):
            self._alerts[alert.fingerprint] = alert
            mine = self._group_for(alert.labels)  # today's grouping, whatever it was then
            mine.fingerprints[alert.fingerprint] = None
            for receiver in alert.told_to or ():
                mine.told[receiver] = mine.told.get(receiver, frozenset()) | {alert.fingerprint}
            mine.last_flush = max(mine.last_flush or last_flush, last_flush)

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
                alert = Alert(
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
            if alert.restored_until is not None:
                # Restored at start and fired again: the incident goes on, receivers know.
                alert.restored_until = None
                log.info("alert_restore_confirmed", alertname=clean["alertname"], fingerprint=fp)
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

    def firing(self, labels: Mapping[str, object]) -> bool:
        """Whether the alert with ``labels`` is firing (resolving ones are not)."""
        fp = fingerprint_of(clean_labels(labels))
        with self._lock:
            alert = self._alerts.get(fp)
            return alert is not None and alert.status is AlertStatus.FIRING

    def _group_for(self, labels: Mapping[str, str]) -> Group:
        group_labels = {k: labels[k] for k in self._group_by if k in labels}
        key = group_key(group_labels)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key=key, labels=group_labels)
        return group

    def _forget(self, alert: Alert) -> None:
        self._alerts.pop(alert.fingerprint, None)
        for key, group in list(self._groups.items()):
            group.fingerprints.pop(alert.fingerprint, None)
            if not group.fingerprints:
                del self._groups[key]
        self._recent.appendleft(describe(alert, state="resolved"))

    # ----------------------------------------------------------------- silences

    def silence(
        self,
        matchers: Mapping[str, str],
        *,
        ends_at: datetime,
        comment: str = "",
        created_by: str = "",
    ) -> Silence:
        """Mute matching alerts until ``ends_at`` (stored first when there is a store).

        Raises:
            ValueError: no matcher, a bad one, or an end not in the future.
        """
        silence = new_silence(
            matchers, ends_at=ends_at, now=self._wall(), created_by=created_by, comment=comment
        )
        self._silences.add(silence)
        log.info("alert_silence_added", id=silence.id, ends_at=silence.ends_at.isoformat())
        return silence

    def unsilence(self, silence_id: str) -> Silence | None:
        """End a silence now; None if no active silence has that id."""
        ended = self._silences.expire(silence_id, now=self._wall())
        if ended is not None:
            log.info("alert_silence_expired", id=silence_id)
        return ended

    def silences(self) -> list[dict[str, Any]]:
        """The active silences as JSON data."""
        wall = self._wall()
        return [s.as_dict(wall) for s in self._silences.active(wall)]

    def _silenced(self, alert: Alert, wall: datetime) -> bool:
        return self._silences.mutes(alert.labels, wall)

    # ----------------------------------------------------------------- time

    def tick(self) -> int:
        """Do the work that time makes due; return how many notifications were enqueued.

        The outbox write comes before any state change, so if it fails the
        same notifications are built again on the next tick.
        """
        now = self._clock.monotonic()
        wall = self._wall()
        self._silences.prune(wall)
        with self._lock:
            expire_restored(self._alerts.values(), now, wall)
            items: list[NewNotification] = []
            flushed: list[tuple[Group, Flush, dict[str, frozenset[str]]]] = []
            for group in list(self._groups.values()):
                members = [self._alerts[fp] for fp in group.fingerprints if fp in self._alerts]
                flush = plan(group, members, now, self._timing, lambda a: self._silenced(a, wall))
                if flush is not None:
                    for alert in flush.firing:
                        alert.owed = True  # before the write, which may fail
                    notes, told = self._notifications(group, flush)
                    items.extend(notes)
                    flushed.append((group, flush, told))
            if items:
                self._outbox.enqueue(items, now=wall)
            for group, flush, told in flushed:
                for alert in flush.firing + flush.settling:
                    if alert.told_to is not None:  # restored: its resolution is owed to
                        # every receiver that now knows it is firing
                        alert.told_to |= {r for r, fps in told.items() if alert.fingerprint in fps}
                for alert in flush.firing:
                    alert.notified = AlertStatus.FIRING
                for alert in flush.settled:
                    alert.notified = AlertStatus.RESOLVED
                    self._forget(alert)
                group.last_flush, group.pending_since, group.told = now, None, told
            self._enqueued += len(items)
            return len(items)

    def _notifications(
        self, group: Group, flush: Flush
    ) -> tuple[list[NewNotification], dict[str, frozenset[str]]]:
        """One notification per receiver with something new to hear, and what each then knows
        is firing. As in Alertmanager, an update that would re-list what a receiver was told
        (another receiver's alert joined or resolved) is not sent to it."""
        out = []
        told: dict[str, frozenset[str]] = {}
        for receiver in self._receivers:
            # Routing: each receiver hears only of the alerts its matchers accept.
            firing = [(a, False) for a in flush.firing if receiver.accepts(a.labels)]
            firing += [(a, True) for a in flush.settling if receiver.accepts(a.labels)]
            settled = [
                (a, False)
                for a in flush.settled
                if receiver.send_resolved
                and receiver.accepts(a.labels)
                and (a.told_to is None or receiver.name in a.told_to)
            ]
            now_firing = frozenset(a.fingerprint for a, _ in firing)
            before = group.told.get(receiver.name, frozenset())
            told[receiver.name] = now_firing
            if not (now_firing - before or settled or (flush.repeat and firing)):
                continue
            alerts = firing + settled
            payload = build_payload(
                receiver=receiver.name,
                group_labels=group.labels,
                alerts=[a.view(as_firing=as_firing) for a, as_firing in alerts],
                external_url=self._external_url,
            )
            out.append(
                NewNotification(
                    receiver=receiver.name,
                    group_key=group.key,
                    status_kind=payload["status"],
                    fingerprints=tuple(a.fingerprint for a, _ in alerts),
                    payload=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
                )
            )
        return out, told

    # ----------------------------------------------------------------- reading

    def snapshot(
        self, notifications_max: int = 100, *, read: StoreRead = _read_now
    ) -> dict[str, Any]:
        """What ``/health/alerts`` shows: active and recent alerts, silences, undelivered
        notifications (pending and failed) and how many there are.

        ``read`` runs the outbox reads (a bounded reader gives up on a busy store,
        and the last count read is shown).
        """
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
                active.append(describe(alert, state=state))
            recent = list(self._recent)
        notes: list[dict[str, Any]] = []

        def outbox() -> tuple[dict[NotificationStatus, int], list[Notification]]:
            return self._outbox.counts(), self._outbox.undelivered(notifications_max)

        try:
            counts, waiting = read(outbox)
            self._undelivered = (
                counts[NotificationStatus.PENDING] + counts[NotificationStatus.FAILED]
            )
            notes = [n.as_dict() for n in waiting]
        except Exception:  # the store is down or busy: show the last count rather than fail
            log.warning("alert_outbox_read_failed", exc_info=True)
        return {
            "active": active,
            "recent": recent,
            "undelivered": self._undelivered,
            "silences": self.silences(),
            "notifications": notes,
        }

    def firing_by_severity(self) -> dict[str, int]:
        """Alerts firing and not silenced, by severity (every severity present); memory only."""
        wall = self._wall()
        with self._lock:
            loud = [
                a
                for a in self._alerts.values()
                if a.status is AlertStatus.FIRING and not self._silenced(a, wall)
            ]
        by_severity = Counter(a.labels.get("severity", "") for a in loud)
        return {s.value: by_severity.get(s.value, 0) for s in Severity}

    def stats(self) -> AlertStats:
        """Alert numbers and the outbox's counts (which read the store)."""
        wall = self._wall()
        with self._lock:
            live = [a for a in self._alerts.values() if a.status is AlertStatus.FIRING]
            loud = [a for a in live if not self._silenced(a, wall)]
            enqueued = self._enqueued
        by_severity = Counter(a.labels.get("severity", "") for a in loud)
        counts = self._outbox.counts()
        return AlertStats(
            firing=len(loud),
            firing_by_severity={s.value: by_severity.get(s.value, 0) for s in Severity},
            silenced=len(live) - len(loud),
            silences=len(self._silences.active(wall)),
            notifications_enqueued=enqueued,
            outbox_pending=counts[NotificationStatus.PENDING],
            outbox_delivered=counts[NotificationStatus.DELIVERED],
            outbox_failed=counts[NotificationStatus.FAILED],
        )
